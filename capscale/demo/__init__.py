"""``capscale demo``: the whole pipeline on built-in defaults, on a CPU, in minutes.

1. The capacity probe: GMSE of the standard panel of formats, against Shannon's bound.
2. Prediction before training: the unified law fitted on the QuEST runs shipped with the
   package, with some formats held out of the fit; their capacity is then predicted from
   their GMSE alone and set beside the multipliers fitted to their own runs (decoupled law).
3. Measurement: a small study on the embedded corpus: a dense ladder (five widths of one
   shape family, each at two token budgets spanning 4x, two seeds at the larger) and
   INT8/INT4/INT2 on weights and activations at three widths of the larger budget; ρ of each format read off the dense
   loss-against-N curve at that budget (the decoupled law there), with bootstrap intervals,
   beside the prediction from GMSE. Written to ``summary.json`` (``measured_capacity``).
4. The report: one folder with index.html, plots and tables.

Everything lands in one folder (default ``./capscale-demo``); a second run reuses the
finished training runs and the cached data, so it takes a fraction of the time.
"""

from __future__ import annotations

import math
import sys
import time
from importlib import resources
from pathlib import Path

import pandas as pd

# QuEST formats held out of the unified fit in step 2 (FP4 and 2:4-sparse INT4)
HELD_OUT = ("e2m1:had", "2:4:pairs+int4:had")
# step 2's capacity curves: one per compression type and training method (GMSE cannot see a
# rotation or a gradient estimator), with the 2:4+INT4 runs placed on their method's scalar
# curve by their joint GMSE (QuEST has one sparsity level, too few for a curve of its own)
QUEST_GROUPS = "kind+method,sparse+scalar=scalar"
# the training method of the demo sweep's runs, in QuEST's names (plain grid, trust estimation)
SWEEP_METHOD = "Trust"
# the capacity probe's panel at a smaller tensor shape (per-row and per-group statistics
# depend on the 4096 columns, not on the rows): standard errors stay below 0.3%
GMSE_SHAPE = (128, 4096)
GMSE_REL_ERR = 2e-3
N_BOOTSTRAP = 400


class Stage:
    """Numbered progress lines with the time each stage took."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream, self.start = total, stream, time.perf_counter()
        self.i, self.t = 0, self.start
        self.times: dict[str, float] = {}
        self.name = ""

    def __call__(self, title: str) -> None:
        self._close()
        self.i += 1
        self.name, self.t = title, time.perf_counter()
        print(f"\n[demo {self.i}/{self.total}] {title}", file=self.stream, flush=True)

    def _close(self) -> None:
        if self.name:
            self.times[self.name] = time.perf_counter() - self.t

    def done(self) -> float:
        self._close()
        return time.perf_counter() - self.start


def demo_spec_path() -> Path:
    return Path(str(resources.files("capscale") / "demo" / "sweep.toml"))


def fmt_rho(v: float, lo: float = math.nan, hi: float = math.nan) -> str:
    if not math.isfinite(v):
        return "—"
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    return f"{v:.3f}"


# ----------------------------------------------------------------- step 1


def gmse_panel(out: Path) -> pd.DataFrame:
    from capscale.capacity.plot import plot_gmse
    from capscale.capacity.table import STANDARD_PANEL, gmse_table
    from capscale.io import write_table

    table = gmse_table(STANDARD_PANEL, shape=GMSE_SHAPE, rel_err=GMSE_REL_ERR, progress=True)
    write_table(table, out / "gmse.csv")
    plot_gmse(table, str(out / "gmse.png"))
    show = table.sort_values("gmse")[["spec", "bits_per_value", "gmse", "ratio_to_shannon",
                                      "rho_unified"]]
    print(show.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"{len(table)} formats; GMSE ± s.e. in {out / 'gmse.csv'}, plot {out / 'gmse.png'}")
    return table


# ----------------------------------------------------------------- step 2


def quest_heldout(n_bootstrap: int = N_BOOTSTRAP):
    """Unified fit without the held-out formats; decoupled fit on every run; the held-out
    formats' capacity predicted from GMSE beside their own fitted multipliers."""
    from capscale.capacity import UNIFIED_LLAMA_C4, rho_unified
    from capscale.laws import fit_law, load_runs
    from capscale.laws import representation as rep
    from capscale.laws.identify import fit_unidentified

    runs = load_runs("builtin:quest")
    # a training method trained at one GMSE only (QuEST's INT1 clip runs) cannot pin a curve
    levels = runs.groupby("w_method")["w_format"].nunique()
    thin = sorted(m for m, k in levels.items() if k < 3 and m != "none")
    runs = runs[~runs["w_method"].isin(thin)].reset_index(drop=True)
    held = runs["w_format"].isin(HELD_OUT)
    print(f"QuEST runs: {len(runs)} (without the {', '.join(thin)} runs: one GMSE level each); "
          f"holding out {int(held.sum())} runs of {', '.join(HELD_OUT)} from the unified fit")
    unified = fit_law(runs[~held].reset_index(drop=True), "unified", capacity_groups=QUEST_GROUPS,
                      n_bootstrap=n_bootstrap)
    curves = ", ".join(f"{g}: F {unified.param(unified.law.natural_name('F', g)):.3f} "
                       f"C {unified.param(unified.law.natural_name('C', g)):.3f}"
                       for g in unified.law.groups)
    print(f"unified fit on {int((~held).sum())} runs, one curve per compression type and training "
          f"method ({curves}), log-loss RMSE {unified.info['rmse_log_loss']:.4f}")
    decoupled = fit_law(runs, "decoupled", key_columns=["w_format", "a_format", "w_method"],
                        n_bootstrap=n_bootstrap)
    measured = decoupled.info["derived_eff"]
    dec_unid = fit_unidentified(decoupled)
    rows = []
    for (w, a, wm, am), _ in runs[held].groupby(["w_format", "a_format", "w_method", "a_method"],
                                                sort=False):
        query = pd.DataFrame({"N": [1.0], "D": [1.0], "loss": [1.0], "w_format": [w],
                              "a_format": [a], "w_method": [wm], "a_method": [am]})
        p = unified.predict(query).iloc[0]
        key = rep.KEY_SEPARATOR.join((w, a, wm))
        m, mlo, mhi = measured[key]
        gw, ga = rep.spec_gmse(w), rep.spec_gmse(a)
        paper = rho_unified(gw, **UNIFIED_LLAMA_C4) * rho_unified(ga, **UNIFIED_LLAMA_C4)
        rows.append({"format": key, "gmse_w": gw, "gmse_a": ga,
                     "not_identified": dec_unid.get(f"eff[{key}]", ""),
                     "rho_predicted": p["eff"], "rho_predicted_lo": p.get("eff_lo", math.nan),
                     "rho_predicted_hi": p.get("eff_hi", math.nan), "rho_paper_constants": paper,
                     "rho_fitted_own_runs": m, "rho_fitted_lo": mlo, "rho_fitted_hi": mhi,
                     "error": p["eff"] - m,
                     "within_interval": bool(mlo <= p["eff"] <= mhi) if math.isfinite(mlo) else None})
    table = pd.DataFrame(rows)
    print("\ncapacity of the held-out formats: predicted from GMSE (unified fit without them) vs "
          "fitted to their own runs (decoupled fit)")
    for _, r in table.iterrows():
        print(f"  {r['format']:<32} GMSE w {r['gmse_w']:.4f} a {r['gmse_a']:.4f}: predicted "
              f"{fmt_rho(r['rho_predicted'], r['rho_predicted_lo'], r['rho_predicted_hi'])}, "
              f"fitted {fmt_rho(r['rho_fitted_own_runs'], r['rho_fitted_lo'], r['rho_fitted_hi'])}"
              f" (paper's constants: {r['rho_paper_constants']:.3f})")
    return runs, unified, decoupled, table


# ----------------------------------------------------------------- step 3


def run_training_sweep(out: Path, jobs: int | None, threads: int | None):
    from capscale.studies.design import describe, simulate
    from capscale.sweep import load_spec, run_sweep

    spec = load_spec(demo_spec_path())
    # before a step is trained: the interval each ρ would get from this design
    print(describe(simulate(spec)))
    outcome = run_sweep(spec, out / "runs", jobs=jobs, threads=threads)
    if not outcome.ok:
        from capscale.errors import CapscaleError

        raise CapscaleError(f"some demo runs failed (their logs are in {out / 'runs'}); run "
                            "`capscale demo` again to retry them")
    return spec, outcome


# The QuEST training method of the demo's compressed runs (trust estimation, no rotation).
DEMO_METHOD = "Trust"


def measure_capacity(sweep_df: pd.DataFrame, quest_unified, n_bootstrap: int = N_BOOTSTRAP
                     ) -> pd.DataFrame:
    """Each trained format's ρ measured against the sweep's own dense ladder: the decoupled
    law at the budget the compressed runs share (95% bootstrap interval; not identified when
    wider than 0.2), beside ρ predicted from GMSE with the paper's constants and with the
    curve fitted on QuEST in stage 2."""
    from capscale.laws.measure import measured_capacity

    table, _ = measured_capacity(sweep_df, n_bootstrap=n_bootstrap)
    curve = []
    for w, a in zip(table["w_format"], table["a_format"]):
        # the QuEST curves are per training method: the demo trains with trust estimation
        # and no Hadamard rotation, QuEST's "Trust" runs
        query = pd.DataFrame({"N": [1.0], "D": [1.0], "loss": [1.0], "w_format": [w],
                              "a_format": [a], "w_method": [DEMO_METHOD],
                              "a_method": [DEMO_METHOD]})
        curve.append(float(quest_unified.predict(query).iloc[0]["eff"]))
    table["rho_quest_curve"] = curve
    return table


def summary_records(capacity: pd.DataFrame) -> list[dict]:
    """``measured_capacity`` of summary.json: format (W/A as the runs table spells it), ρ with
    its 95% interval, whether it is identified, and ρ from GMSE with the paper's constants."""
    def num(v):
        return float(v) if math.isfinite(v) else None

    return [{"format": r["format"], "rho": num(r["rho"]), "lo": num(r["lo"]),
             "hi": num(r["hi"]), "identified": bool(r["identified"]),
             "rho_gmse": num(r["rho_gmse"]), "runs": int(r["runs"])}
            for _, r in capacity.iterrows()]


# ----------------------------------------------------------------- step 4


def write_report(out: Path, gmse: pd.DataFrame, quest: tuple, sweep_df: pd.DataFrame, fits: dict,
                 capacity: pd.DataFrame, spec) -> Path:
    from capscale.laws.measure import MEASURED_COLUMNS, unidentified_reasons, why_not_identified
    from capscale.laws.plots import plot_capacity, plot_loss_vs_n, plot_measured_capacity
    from capscale.report import Report, add_standard_sections
    from capscale.report.build import SHANNON_BITS, unidentified_rows

    quest_runs, unified, decoupled, held = quest
    rep = Report(out / "report", "capscale demo",
                 subtitle="Capacity from GMSE, the unified law on the QuEST runs, and a small "
                          "training sweep on this machine.")
    rep.section("1. GMSE of the standard panel",
                f"GMSE of each format on N(0, 1) tensors of {GMSE_SHAPE[0]}×{GMSE_SHAPE[1]} "
                "(exact where the grid allows, Monte Carlo otherwise, with standard errors), "
                "against bits per value with Shannon's bound 4^(−b) and the best scalar grid; ρ "
                "from the unified paper's constants (L 1.0, F 0.41, C 1.39, arXiv 2506.01863).")
    import shutil

    shutil.copyfile(out / "gmse.png", rep.plot_path("gmse.png"))
    rep.image(rep.plot_path("gmse.png"), "GMSE against bits per value.")
    rep.table(gmse.sort_values("gmse"), "gmse_panel", caption="The panel, by GMSE.",
              columns=["spec", "bits_per_value", "gmse", "gmse_se", "method",
                       "ratio_to_shannon", "rho_unified"])

    rep.section("2. Predicting held-out formats on the QuEST runs",
                f"The unified law (one capacity curve per compression type and training method, "
                f"capacities multiplying over weights and activations; the 2:4+INT4 runs read "
                f"from their method's scalar curve at their joint GMSE) fitted on "
                f"{len(quest_runs)} QAT runs of QuEST (arXiv 2502.05003; the INT1 clip runs, one "
                f"GMSE level per method, left out) without {', '.join(HELD_OUT)}; their capacity "
                "predicted from GMSE alone, beside the multipliers the decoupled law fits to "
                "their own runs (keyed on format and method).")
    rep.table(held, "quest_heldout", caption="Held-out formats: predicted vs fitted capacity "
                                             "(95% bootstrap intervals).",
              unidentified=unidentified_rows(held),
              value_columns=["rho_fitted_own_runs", "rho_fitted_lo", "rho_fitted_hi", "error"])
    path = plot_capacity(unified, rep.plot_path("quest_capacity.png"), decoupled, bits=SHANNON_BITS)
    rep.image(path, "QuEST: ρ against GMSE, one curve per training method fitted without the "
                    "held-out formats, and every format's own multiplier (per compressed operand; "
                    "plain, Hadamard and half-Hadamard runs of one format share a GMSE).")
    path = plot_loss_vs_n(unified, quest_runs, rep.plot_path("quest_loss_vs_n.png"))
    rep.image(path, "QuEST: loss against N with the unified fit's curves (held-out formats "
                    "predicted, not fitted).")

    rep.section("3. Measuring capacity on this machine",
                f"{len(spec.runs)} runs from {demo_spec_path().name}: a dense ladder of tiny "
                "Llama models on the embedded Wikipedia corpus (five widths of one shape "
                "family, each at two token budgets spanning 4x, two seeds at the larger) and "
                "INT8/INT4/INT2 (QuEST grid, trust estimation) on weights and activations at "
                "three widths of the larger budget (INT4 with two seeds). ρ of each format: "
                f"{capacity.attrs.get('method', '')} (95% "
                "intervals; wider than 0.2 is shown as not identified), beside ρ predicted from "
                "GMSE with the paper's constants and with the curve fitted on QuEST in section 2.")
    why = why_not_identified(capacity)
    rep.table(capacity, "measured_capacity",
              caption="Capacity per format: measured and predicted."
                      + (f" Not identified where greyed: {why}." if why else ""),
              unidentified=unidentified_reasons(capacity), value_columns=MEASURED_COLUMNS)
    path = plot_measured_capacity(capacity, rep.plot_path("measured_capacity.png"),
                                  title="demo sweep: measured against predicted ρ")
    rep.image(path, "Measured ρ (95% interval) against ρ predicted from GMSE.")
    add_standard_sections(rep, sweep_df, fits, prefix="sweep_", heading="sweep")
    return rep.write()


# ----------------------------------------------------------------- main


def run_demo(out: str | Path = "capscale-demo", *, jobs: int | None = None,
             threads: int | None = None, n_bootstrap: int = N_BOOTSTRAP) -> dict:
    """Run the four steps into ``out``; returns the paths and the wall time."""
    from capscale.io import atomic_write_json
    from capscale.laws import load_runs
    from capscale.laws.measure import describe_rho, why_not_identified
    from capscale.report import fit_laws

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage = Stage(4)
    stage("GMSE of the standard panel of formats (the capacity probe)")
    gmse = gmse_panel(out)

    stage("the unified law on the QuEST runs: capacity of held-out formats from GMSE alone")
    quest = quest_heldout(n_bootstrap)

    stage("a small study on the embedded corpus: ρ of INT8/INT4/INT2 measured against a "
          "dense ladder, beside the GMSE prediction")
    spec, outcome = run_training_sweep(out, jobs, threads)
    sweep_df = load_runs(outcome.runs_csv)
    fits = fit_laws(sweep_df, n_bootstrap=n_bootstrap, capacity_groups="single")
    capacity = measure_capacity(sweep_df, quest[1], n_bootstrap)
    print("\ncapacity ρ per format (weights and activations together), measured against the "
          "dense ladder:")
    for _, r in capacity.iterrows():
        print(f"  {r['format']:<10} measured {describe_rho(r):<28} predicted from GMSE "
              f"{r['rho_gmse']:.3f} (paper's constants), {r['rho_quest_curve']:.3f} (QuEST "
              "curve)")
    missed = capacity[~capacity["identified"]]
    if len(missed):
        print(f"  not identified: {', '.join(missed['format'])}: these runs do not pin ρ down "
              f"to an interval narrower than 0.2: {why_not_identified(capacity)}")
    atomic_write_json(out / "summary.json", {
        "measured_capacity": summary_records(capacity),
        "not_identified_because": why_not_identified(capacity) or None,
        "runs": len(sweep_df), "method": f"{capacity.attrs['method']}, {n_bootstrap} "
        "resamples, 95% intervals; rho_gmse: the paper's constants (L 1.0, F 0.41, C 1.39)"})

    stage("the report")
    index = write_report(out, gmse, quest, sweep_df, fits, capacity, spec)
    total = stage.done()
    print("\nstage times: " + ", ".join(f"{i + 1}) {t:.0f} s" for i, t in
                                         enumerate(stage.times.values())))
    print(f"capscale demo done in {total / 60:.1f} min. Report: {index.resolve()}")
    print(f"runs: {outcome.root}, runs table: {outcome.runs_csv}")
    print(f"summary: {out / 'summary.json'}")
    return {"report": index, "runs": outcome.root, "wall_s": total, "stage_s": stage.times,
            "summary": out / "summary.json"}
