"""The standard report of a runs table or a fit: fits, plots and tables in one folder.

From runs, the laws that the runs support are fitted (Chinchilla for dense-only tables; the
decoupled law, a multiplier per format, and the unified law, ρ from GMSE, when there are
compressed formats). The sections reuse the plot functions of :mod:`capscale.laws.plots`:

- the fit table: parameters with bootstrap intervals, in-sample and held-out error, warnings;
- loss against N per format with the fitted curves, and predicted against measured;
- ρ against GMSE: the fitted capacity curve, each format's own multiplier, Shannon's 4^(−b);
- composability: fitted multipliers of weight × activation (or sparse × quantized) formats
  against the product of their one-axis marginals, where the runs have the marginals;
- the iso-memory Pareto front: capacity against storage bits per value (formats never
  trained placed by their GMSE when the unified law was fitted);
- the runs themselves.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.report.html import Report
from capscale.runrecord import REPRESENTATION_COLUMNS, SUMMARY_COLUMNS, is_dense

SHANNON_BITS = (1, 2, 3, 4, 6, 8)


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"[report] {msg}", file=sys.stderr, flush=True)


def is_fit_file(source) -> bool:
    p = Path(str(source))
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "law_spec" in d


def has_compressed(df: pd.DataFrame) -> bool:
    cols = [c for c in REPRESENTATION_COLUMNS if c in df.columns]
    return any(not is_dense(v) for c in cols for v in df[c].dropna().unique())


@dataclass(frozen=True)
class FitFailure:
    """A law that could not be fitted to the runs, and why (it goes into the report as a
    note where the fit's tables and plots would be)."""

    law: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def fitted(fit) -> bool:
    """Whether an entry of a ``fits`` dict is a fit (not None, not a FitFailure)."""
    return fit is not None and not isinstance(fit, FitFailure)


def fit_laws(df: pd.DataFrame, *, n_bootstrap: int = 1000, capacity_groups: str | None = None,
             quiet: bool = False) -> dict:
    """The laws a runs table supports, fitted: law name -> FitResult, or a FitFailure for a
    law that could not be fitted."""
    from capscale.laws import fit_law
    from capscale.laws.forms import default_law

    laws = [default_law(df)]  # what `capscale fit` fits without --law
    if laws[0] == "decoupled":
        laws.append("unified")
    fits: dict = {}
    for law in laws:
        options = {"capacity_groups": capacity_groups} if law == "unified" and capacity_groups else {}
        _say(f"fitting the {law} law to {len(df)} runs", quiet)
        try:
            fits[law] = fit_law(df, law, n_bootstrap=n_bootstrap, progress=not quiet, **options)
        except CapscaleError as e:
            fits[law] = FitFailure(law, str(e))
    return fits


def primary_fit(fits: dict):
    for law in ("unified", "decoupled", "chinchilla", "precision", "sparsity"):
        f = fits.get(law)
        if fitted(f):
            return f
    return None


def param_table(fit) -> pd.DataFrame:
    """Parameters with intervals; ``not_identified`` says why a number the runs do not pin
    down is not a result (empty for the others)."""
    from capscale.laws.identify import fit_unidentified

    unid = fit_unidentified(fit)
    rows = []
    for name in fit.law.natural_names:
        lo, hi = fit.interval(name)
        rows.append({"parameter": name, "value": fit.param(name), "lo": lo, "hi": hi})
    shown = {r["parameter"] for r in rows}
    for key, (v, lo, hi) in fit.info.get("derived_eff", {}).items():
        name = f"eff[{key}]"
        if name not in shown:
            rows.append({"parameter": name, "value": v, "lo": lo, "hi": hi})
    for r in rows:
        r["not_identified"] = unid.get(r["parameter"], "")
    return pd.DataFrame(rows)


def unidentified_rows(table: pd.DataFrame, column: str = "not_identified") -> dict:
    """Row position -> reason, for the rows of ``table`` whose numbers are not identified."""
    if column not in table:
        return {}
    return {i: str(v) for i, v in enumerate(table[column]) if isinstance(v, str) and v}


def quality_row(fit) -> dict:
    info = fit.info
    h = info.get("heldout") or {}
    return {"law": info["law"], "runs": info["data"]["n_runs"],
            "rmse_loss": info["rmse_loss"], "rmse_log_loss": info["rmse_log_loss"],
            "heldout_rule": h.get("rule", ""), "heldout_runs": h.get("n_runs"),
            "heldout_rmse_loss": h.get("rmse_loss", math.nan),
            "heldout_rmse_log_loss": h.get("rmse_log_loss", math.nan),
            "heldout_mean_error": h.get("mean_error", math.nan),
            "warnings": len(info.get("warnings", []))}


def add_fit_table(rep: Report, fits: dict, prefix: str = "") -> None:
    level = None
    quality = []
    for law, fit in fits.items():
        if not fitted(fit):
            rep.note(f"The {law} law could not be fitted to these runs: {fit}")
            continue
        level = fit.info["settings"]["interval_level"]
        rep.text(f"{law}: {fit.info['formula']} ({fit.info.get('reference', '')})")
        params = param_table(fit)
        unid = unidentified_rows(params)
        rep.table(params, f"{prefix}fit_{law}",
                  caption=f"{law} law: fitted parameters with {int(level * 100)}% bootstrap "
                          f"intervals ({len(fit.samples) if fit.samples is not None else 0} "
                          "resamples of the runs)."
                          + (f" {len(unid)} parameter(s) are not identified by these runs: "
                             "greyed, with the reason." if unid else ""),
                  unidentified=unid, value_columns=["value", "lo", "hi"])
        for w in fit.info.get("warnings", []):
            rep.note(f"{law}: {w}")
        h = fit.info.get("heldout") or {}
        if h.get("error"):
            rep.note(f"{law}: held-out error not computed ({h['error']})")
        quality.append(quality_row(fit))
    if quality:
        rep.table(pd.DataFrame(quality), f"{prefix}fit_quality",
                  caption="Fit quality: RMSE in sample, and on the largest model size held out "
                          "of the fit and predicted from the rest.")


# the parameters of a law's size and data terms: a loss-against-N curve needs all of them
CURVE_TERMS = ("A", "alpha", "B", "beta")


def add_loss_plots(rep: Report, df: pd.DataFrame, fits: dict, prefix: str = "") -> None:
    from capscale.laws.identify import fit_unidentified
    from capscale.laws.plots import plot_loss_vs_n, plot_predicted_vs_measured

    shown = False
    for law in ("decoupled", "unified", "chinchilla"):
        fit = fits.get(law)
        if not fitted(fit):
            continue
        # the curves are the size and data terms: not drawn when the runs do not pin them
        free = {k: v for k, v in fit_unidentified(fit).items() if k in CURVE_TERMS}
        if free:
            name, why = next(iter(free.items()))
            rep.note(f"Loss against N with the {law} fit is not drawn: its curves are not "
                     f"identified by these runs ({name}: {why}).")
            continue
        path = plot_loss_vs_n(fit, df, rep.plot_path(f"{prefix}loss_vs_n_{law}.png"))
        rep.image(path, f"Loss against N, one colour per format (points: runs; lines: the "
                        f"{law} fit for every format and tokens-per-parameter ratio of the runs).")
        shown = True
    fit = primary_fit(fits)
    if fit is not None:
        path = plot_predicted_vs_measured(fit, df, rep.plot_path(f"{prefix}predicted_vs_measured.png"))
        rep.image(path, f"Predicted against measured loss ({fit.law.name} fit).")
    if not shown:
        rep.note("No law could be fitted, so there are no fitted curves to show.")


def add_capacity(rep: Report, fits: dict, prefix: str = "", measured=None) -> None:
    from capscale.laws.plots import plot_capacity

    uni = fits.get("unified")
    if not fitted(uni):
        rep.note("ρ against GMSE needs the unified law, which was not fitted"
                 + (f": {uni}" if uni is not None else " (the runs have no compressed format)."))
        return
    from capscale.laws.identify import fit_unidentified

    dec = measured if measured is not None else fits.get("decoupled")
    dec = dec if fitted(dec) else None
    nat = dict(zip(uni.law.natural_names, uni.natural))
    unid = fit_unidentified(uni)
    curve_why = [next((f"{n}: {unid[n]}" for n in
                       [uni.law.natural_name(x, g) for x in ("L", "F", "C", "A_rho", "B_rho")]
                       + ["alpha"] if n in unid), None) for g in uni.law.groups]
    dec_unid = fit_unidentified(dec) if dec is not None else {}
    dec_known = [k for k in (dec.info.get("derived_eff", {}) if dec is not None else {})
                 if f"eff[{k}]" not in dec_unid and not _dense_key(k)]
    if all(curve_why) and not dec_known:
        rep.note("No capacity is identified by these runs, so there is no curve or multiplier to "
                 f"draw: {curve_why[0]}. The runs themselves are in the loss-against-N plot.")
    else:
        path = plot_capacity(uni, rep.plot_path(f"{prefix}capacity_vs_gmse.png"), dec,
                             bits=SHANNON_BITS)
        rep.image(path, "Capacity ρ against GMSE: the fitted curve ρ(GMSE), each format's "
                        "multiplier from the decoupled fit (per compressed operand), and Shannon's "
                        "bound GMSE ≥ 4^(−b): no b-bit format lies left of its line, so the curve "
                        "there is the most capacity b bits can buy. Curves and multipliers the "
                        "runs do not identify are left out and named above the plot.")
    rows = []
    for b in SHANNON_BITS:
        for group in uni.law.groups:
            names = [uni.law.natural_name(x, group) for x in ("L", "F", "C", "A_rho", "B_rho")]
            why = next((f"{n}: {unid[n]}" for n in names + ["alpha"] if n in unid), "")
            rows.append({"bits": b, "group": group, "shannon_gmse": 4.0 ** -b,
                         "max_rho": float(uni.law.rho(nat, np.array([4.0 ** -b]), group)[0]),
                         "not_identified": why})
    bound = pd.DataFrame(rows)
    rep.table(bound, f"{prefix}capacity_bound",
              caption="The capacity the fitted curve allows at Shannon's bound, per bit width.",
              unidentified=unidentified_rows(bound), value_columns=["max_rho"])


def add_composability(rep: Report, fits: dict, prefix: str = "") -> None:
    from capscale.laws import composability
    from capscale.laws.plots import plot_composability

    dec = fits.get("decoupled")
    if not fitted(dec):
        rep.note("Composability needs the decoupled law (a multiplier per format), which was not "
                 "fitted.")
        return
    from capscale.laws.identify import fit_unidentified

    unid = fit_unidentified(dec)

    def marked(t):
        t = t.copy()
        t["not_identified"] = [unid.get(f"eff[{k}]", unid.get("alpha", "")) for k in t["format"]]
        return t

    table = marked(composability(dec))
    known = table[np.isfinite(table["product"]) & (table["not_identified"] == "")]
    assumed = False
    if known.empty and len(table):
        table = marked(composability(dec, assume_symmetric=True))
        known = table[np.isfinite(table["product"]) & (table["not_identified"] == "")]
        assumed = not known.empty
    if known.empty:
        rep.note("No two-axis format here has both of its marginals among the runs (e.g. "
                 "int4/int4 needs int4/none and none/int4, sparse0.5+int4 needs sparse0.5 and "
                 "int4) with an identified multiplier, so composability cannot be checked on "
                 "these runs.")
        if len(table):
            rep.table(table, f"{prefix}composability", caption="Two-axis formats found.",
                      unidentified=unidentified_rows(table),
                      value_columns=["eff", "product", "abs_error"])
        return
    drawn = table[table["not_identified"] == ""]
    drawn.attrs.update(table.attrs)
    path = plot_composability(drawn, rep.plot_path(f"{prefix}composability.png"))
    if assumed:
        rep.note("The runs have no activation-only (or no weight-only) runs, so a missing "
                 "marginal is taken from the same format on the other axis (assumed symmetric; "
                 "the table marks those cells).")
    rep.image(path, f"Fitted multiplier of each two-axis format against the product of its "
                    f"marginals; mean absolute error {table.attrs['mean_abs_error']:.3g}.")
    rep.table(table, f"{prefix}composability", caption="Composability table.",
              unidentified=unidentified_rows(table), value_columns=["eff", "product", "abs_error"])


def comparable_specs(fit, specs) -> list[str]:
    """The specs a fit can place (a unified fit cannot place a compression type it has no
    curve for)."""
    from capscale.laws import compare_formats

    ok = []
    for s in dict.fromkeys(specs):
        try:
            compare_formats(fit, [s])
            ok.append(s)
        except CapscaleError:
            continue
    return ok


def add_pareto(rep: Report, fits: dict, prefix: str = "", panel=None) -> None:
    from capscale.laws import compare_formats
    from capscale.laws.compare import STANDARD_PANEL
    from capscale.laws.plots import plot_compare

    fit = fits.get("unified")
    if not fitted(fit):
        fit = fits.get("decoupled")
    if not fitted(fit):
        rep.note("The iso-memory comparison needs a law with a capacity per format.")
        return
    trained = [k for k in fit.info.get("derived_eff", {})
               if not _dense_key(k)]
    if panel is None:
        panel = STANDARD_PANEL
    specs = trained + (list(panel) if fit.law.name == "unified" else [])
    specs = comparable_specs(fit, specs)
    if not specs:
        rep.note("No format of these runs can be placed by the fit.")
        return
    table = compare_formats(fit, specs)
    if table["identified"].any():
        path = plot_compare(table, rep.plot_path(f"{prefix}pareto.png"))
        src = ("formats never trained are placed by their GMSE through the fitted capacity curve"
               if fit.law.name == "unified" else "each format's multiplier fitted to its runs")
        rep.image(path, f"Iso-memory Pareto front: capacity ρ against storage bits per value "
                        f"(scales and masks included), {fit.law.name} fit; {src}. A format on the "
                        "front buys the most effective parameters for its bits.")
    else:
        rep.note(f"The {fit.law.name} fit identifies the capacity of none of these formats "
                 f"({table['why_not_identified'].iloc[0]}), so there is no Pareto front to draw.")
    cols = [c for c in ("format", "rho", "rho_lo", "rho_hi", "trained", "bits_weights",
                        "iso_memory_gain", "pareto_bits", "cost_linear", "rho_per_compute_linear",
                        "why_not_identified")
            if c in table.columns]
    rep.table(table, f"{prefix}pareto", caption="Formats ranked by capacity; iso-memory gain is "
                                                "ρ·16/bits (over bf16).", columns=cols,
              unidentified=unidentified_rows(table, "why_not_identified"),
              value_columns=["rho", "rho_lo", "rho_hi", "iso_memory_gain",
                             "rho_per_compute_linear"])


def _dense_key(key: str) -> bool:
    from capscale.laws.representation import is_dense_key

    return is_dense_key(key)


def add_runs(rep: Report, df: pd.DataFrame, prefix: str = "") -> None:
    cols = [c for c in SUMMARY_COLUMNS if c in df.columns]
    rep.table(df, f"{prefix}runs", caption=f"The {len(df)} runs.", columns=cols)


def add_standard_sections(rep: Report, df: pd.DataFrame | None, fits: dict, prefix: str = "",
                          heading: str = "", panel=None) -> None:
    """The sections of a fitted runs table (``df`` None: a fit alone). ``panel``: formats
    never trained to place on the Pareto front with a unified fit (default: the laws'
    comparison panel)."""
    h = f"{heading}: " if heading else ""
    rep.section(f"{h}fitted laws")
    add_fit_table(rep, fits, prefix)
    if df is not None:
        rep.section(f"{h}loss against N")
        add_loss_plots(rep, df, fits, prefix)
    rep.section(f"{h}capacity against GMSE")
    add_capacity(rep, fits, prefix)
    rep.section(f"{h}composability")
    add_composability(rep, fits, prefix)
    rep.section(f"{h}iso-memory Pareto front")
    add_pareto(rep, fits, prefix, panel)
    if df is not None:
        rep.section(f"{h}runs")
        add_runs(rep, df, prefix)


def build_report(source: str | os.PathLike, out: str | os.PathLike, *, runs=None,
                 n_bootstrap: int = 1000, capacity_groups: str | None = None,
                 title: str | None = None, panel=None, quiet: bool = False) -> Path:
    """Write the report of ``source`` (a runs table in any form ``capscale fit`` reads, or a
    fit JSON) into the folder ``out``; returns the path of its index.html."""
    from capscale.laws import FitResult, load_runs

    df, fits, what = None, {}, str(source)
    if is_fit_file(source):
        fit = FitResult.load(source)
        fits[fit.law.name] = fit
        df = _runs_of_fit(fit, runs)
        if df is not None:
            what = f"{df.attrs.get('source', runs)} (fit {source})"
        if df is not None and fit.law.name != "decoupled" and has_compressed(df):
            from capscale.laws import fit_law

            try:
                fits["decoupled"] = fit_law(df, "decoupled", n_bootstrap=n_bootstrap)
            except CapscaleError as e:
                fits["decoupled"] = FitFailure("decoupled", str(e))
    else:
        df = load_runs(runs if runs is not None else source, drop_bad=True)
        fits = fit_laws(df, n_bootstrap=n_bootstrap, capacity_groups=capacity_groups, quiet=quiet)
    rep = Report(out, title or f"capscale report: {Path(str(source)).name or source}",
                 subtitle=_subtitle(what, df))
    dropped = (df.attrs.get("report") or {}) if df is not None else {}
    if dropped.get("bad"):
        from capscale.laws.table import TableReport

        rep.note(f"Rows left out of the fits: {TableReport(**dropped).describe()}")
    if df is None:
        rep.note("The runs this fit was made from were not found (give them with --runs); "
                 "sections that plot runs are left out.")
    _say("plots and tables", quiet)
    add_standard_sections(rep, df, fits, panel=panel)
    path = rep.write()
    _say(f"wrote {path}", quiet)
    return path


def _subtitle(what: str, df: pd.DataFrame | None) -> str:
    if df is None:
        return f"Fit {what}."
    keys = [c for c in REPRESENTATION_COLUMNS if c in df.columns]
    n_formats = len(df[keys].drop_duplicates()) if keys else 1
    return (f"{len(df)} runs from {what}: N {df['N'].min():,.0f} to {df['N'].max():,.0f}, "
            f"D {df['D'].min():.3g} to {df['D'].max():.3g}, {n_formats} representation(s).")


def _runs_of_fit(fit, runs):
    """The runs a fit was made from: ``runs`` if given, else its recorded source when that is
    still readable and has the same data hash."""
    from capscale.laws import load_runs
    from capscale.laws.table import data_hash

    if runs is not None:
        return load_runs(runs, drop_bad=True)
    data = fit.info.get("data", {})
    sel = data.get("selection")
    try:  # the selection's expressions are evaluated by capscale.laws.expr, never by Python
        if (isinstance(sel, dict) and isinstance(sel.get("table"), str)
                and str(data.get("source", "")).startswith(sel["table"])):
            df = load_runs(sel["table"], mapping=sel.get("map") or None,
                           derive=sel.get("derive") or None, where=sel.get("where") or None,
                           drop_bad=True)
        else:
            df = load_runs(data.get("source", ""), drop_bad=True)
    except (CapscaleError, OSError, TypeError, AttributeError):
        return None
    cols = fit.info["data"].get("columns")
    if data_hash(df, cols) != fit.info["data"].get("hash"):
        return None
    return df
