"""Studies: the unified paper's experiments (arXiv 2506.01863), each a sweep spec at two scales
plus its analysis.

    >>> from capscale.studies import study, study_spec, run_study, analyse, write_report
    >>> spec = study_spec("int", "cpu")            # a SweepSpec: dense ladder + INT runs
    >>> out = run_study("int", "runs/int")          # resumable (the sweep engine), then analysed

A study measures each representation's ρ with the decoupled law against its own dense ladder
(bootstrap 95% intervals; wider than 0.2 is reported as not identified), fits the unified
curve per compression type, and checks the paper's claim for that experiment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from capscale.errors import CapscaleError
from capscale.studies.catalog import Check, Study, studies, study
from capscale.studies.ladder import LADDERS, SCALES, Ladder, scale_ladder, spec_dict

STUDY_FILE = "study.json"
N_BOOTSTRAP = 400
CURVE_BOOTSTRAP = 100  # enough to tell an identified curve from one the runs do not pin down


def study_spec(name: str, scale: str = "cpu"):
    """The study's runs as a validated, expanded :class:`~capscale.sweep.SweepSpec`."""
    from capscale.sweep import spec_from_dict

    s = study(name).at(scale)
    lad = study_ladder(s, scale)
    d = spec_dict(f"study-{s.name}-{scale}", lad, [dict(p) for p in s.points], s.train)
    return spec_from_dict(d, source=f"study {s.name} ({scale})")


def study_ladder(s: Study, scale: str) -> Ladder:
    """The ladder a study trains on: at CPU scale with the study's own number of seeds at the
    compressed budget (``Study.cpu_seeds``, what its design check needs)."""
    lad = scale_ladder(scale)
    if scale != "cpu":
        return lad
    seeds = tuple(range(s.cpu_seeds))
    return dataclasses.replace(lad, dense_seeds=seeds, compressed_seeds=seeds)


# --------------------------------------------------------------- cost


def cpu_seconds(spec) -> float:
    """Wall time of the spec on 2 cores, two runs at once (an estimate from the ladder's
    measured step times, :func:`capscale.sweep.cost.cpu_seconds_of`; total core-seconds
    over 2)."""
    from capscale.sweep import vocab_size_of
    from capscale.sweep.cost import cpu_seconds_of

    return sum(cpu_seconds_of(r, vocab_size_of(r.config.tokenizer)[0]) for r in spec.runs) / 2.0


def catalog_table() -> pd.DataFrame:
    """One row per study: its paper figure, runs at each scale, CPU time on 2 cores at CPU
    scale and accelerator-hours at paper scale."""
    from capscale.sweep import estimate

    rows = []
    for s in studies().values():
        cpu, paper = study_spec(s.name, "cpu"), study_spec(s.name, "paper")
        est = estimate(paper)
        rows.append({"study": s.name, "figure": s.figure, "runs_cpu": len(cpu.runs),
                     "cpu_hours_2_cores": cpu_seconds(cpu) / 3600.0,
                     "runs_paper": len(paper.runs),
                     "accelerator_hours_paper": est.accelerator_hours,
                     "accelerator": est.accelerator.upper(), "what": s.title})
    return pd.DataFrame(rows)


# --------------------------------------------------------------- analysis


@dataclass
class StudyResult:
    study: Study
    runs: pd.DataFrame
    capacity: pd.DataFrame  # measured ρ per representation (capscale.laws.measure)
    checks: pd.DataFrame  # the paper's claims, one row per check, with a verdict
    curves: dict  # compression type (or split) -> unified-curve parameters, or why not fitted
    fit: object = None
    notes: list = field(default_factory=list)
    # ρ of each combined representation beside the product of its parts' (composition_table)
    composition: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def unidentified(self) -> list[str]:
        return list(self.capacity.loc[~self.capacity["identified"], "format"])

    def verdict(self) -> str:
        v = self.checks["verdict"].value_counts().to_dict() if len(self.checks) else {}
        parts = [f"{v[k]} {k}" for k in ("supported", "contradicted", "not resolved",
                                         "not identified", "not run") if v.get(k)]
        return ", ".join(parts) if parts else "no checks"


def run_check(fit, check: Check, identified: dict[str, bool]) -> dict:
    """One claim against the measured capacities: the ratio with its interval and a verdict."""
    from capscale.laws.measure import fitted_keys, ratio_interval

    keys = [check.num, *check.den]
    fitted = set().union(*fitted_keys(fit))
    row = {"claim": check.claim, "ratio": math.nan, "lo": math.nan, "hi": math.nan}
    missing = [k for k in keys if k not in fitted]
    if missing:
        return {**row, "verdict": "not run", "why": f"no runs of {', '.join(missing)}"}
    vague = [k for k in keys if k in identified and not identified[k]]
    v, lo, hi = ratio_interval(fit, check.num, list(check.den))
    row.update(ratio=v, lo=lo, hi=hi)
    if vague:
        return {**row, "verdict": "not identified",
                "why": f"ρ of {', '.join(vague)} not identified"}
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return {**row, "verdict": "not identified", "why": "no bootstrap interval"}
    if check.relation == "=":
        ok = lo <= 1.0 <= hi
        return {**row, "verdict": "supported" if ok else "contradicted",
                "why": "interval of the ratio holds 1" if ok else
                f"ratio {'above' if lo > 1 else 'below'} 1"}
    if lo > 1.0:
        return {**row, "verdict": "supported", "why": "ratio above 1"}
    if hi < 1.0:
        return {**row, "verdict": "contradicted", "why": "ratio below 1"}
    return {**row, "verdict": "not resolved", "why": "interval of the ratio straddles 1"}


def composition_table(fit, checks, capacity: pd.DataFrame) -> pd.DataFrame:
    """The claims that one representation's ρ is the product of its parts' (W×A, sparsity ×
    INT; the paper's Fig. 6): per claim, ρ of the whole and the product of the parts' ρ, each
    with its 95% interval from the joint draws, and whether both are identified."""
    from capscale.laws.measure import fitted_keys, is_identified, product_interval

    fitted = set().union(*fitted_keys(fit)) if fit is not None else set()
    by_key = capacity.set_index("format")
    rows = []
    for c in checks:
        if (c.relation != "=" or len(c.den) < 2 or not {c.num, *c.den} <= fitted
                or c.num not in by_key.index):
            continue
        whole = by_key.loc[c.num]
        prod, lo, hi = product_interval(fit, list(c.den))
        parts_ok = all(k in by_key.index and bool(by_key.loc[k, "identified"]) for k in c.den)
        rows.append({"claim": c.claim, "whole": c.num, "parts": " · ".join(c.den),
                     "rho": whole["rho"], "lo": whole["lo"], "hi": whole["hi"],
                     "product": prod, "product_lo": lo, "product_hi": hi,
                     "identified": bool(whole["identified"]) and parts_ok
                     and is_identified(lo, hi)})
    return pd.DataFrame(rows)


def fit_curves(df: pd.DataFrame, s: Study, n_bootstrap: int = CURVE_BOOTSTRAP) -> dict:
    """The unified curve ρ(GMSE) = L·tanh(F·log_{1/4} GMSE)^C per compression type, fitted
    on all the study's runs, or on the dense runs plus each training method's runs where the
    study varies the method (LSQ against trust): type -> {L, F, C, rmse_log_loss} or the reason
    it could not be fitted."""
    from capscale.laws import fit_law
    from capscale.laws import representation as rep

    extra = [c for c in s.key_columns if not c.endswith("_format")]
    subsets = {"": df}
    if extra:
        col = extra[0]
        dense = rep.dense_rows(df)
        for v in sorted(set(df.loc[~dense, col].astype(str))):
            subsets[f"{col}={v}"] = df[dense | (df[col].astype(str) == v).to_numpy()]
        del subsets[""]
    out = {}
    for label, sub in subsets.items():
        try:
            f = fit_law(sub.reset_index(drop=True), "unified", capacity_groups=s.curve_groups,
                        n_bootstrap=n_bootstrap, heldout=False)
        except CapscaleError as e:
            out[label or "all"] = str(e)
            continue
        levels = f.law.gmse_levels(sub)
        for g in f.law.groups:
            name = f"{label} {g}".strip()
            vague = f.info.get("unidentified", {})
            params = [k for k in ("L", "F", "C") if f.law.fix_L is None or k != "L"]
            if len(levels.get(g, ())) <= len(params):
                # as many GMSE levels as parameters: the curve passes through its points
                # whatever they are, and a bootstrap over runs cannot show that it is free
                out[name] = (f"not identified: {len(levels.get(g, ()))} GMSE levels for "
                             f"{len(params)} curve parameters ({', '.join(params)}): the curve "
                             "passes through them exactly; it needs more levels than parameters")
                continue
            missed = [k for k in params if f.law.natural_name(k, g) in vague]
            if missed:  # a curve with a parameter the runs do not pin down is no result
                why = vague[f.law.natural_name(missed[0], g)]
                out[name] = f"not identified: {', '.join(missed)} ({why})"
                continue
            out[name] = {k: f.param(f.law.natural_name(k, g)) for k in params}
            out[name]["rmse_log_loss"] = f.info["rmse_log_loss"]
    return out


def analyse(name: str, runs: pd.DataFrame, *, n_bootstrap: int = N_BOOTSTRAP,
            seed: int = 0, scale: str | None = None) -> StudyResult:
    """ρ per representation from the decoupled fit against the study's dense runs, the
    paper's claims checked on it, and the unified curve per compression type (the claims of
    the study as it runs at ``scale``; by default the scale whose points the runs are)."""
    from capscale.laws import load_runs
    from capscale.laws import representation as rep
    from capscale.laws.measure import measured_capacity

    df = runs if "report" in getattr(runs, "attrs", {}) else load_runs(runs)
    s = study(name)
    for col in s.key_columns:
        if col not in df.columns:
            raise CapscaleError(f"study {s.name!r} keys its runs on {col!r}, which the runs "
                                "table lacks")
    if scale is None:
        scale = s.scale_of(rep.representation_keys(df, list(s.key_columns)))
    s = s.at(scale)
    table, fit = measured_capacity(df, n_bootstrap=n_bootstrap, seed=seed,
                                   key_columns=list(s.key_columns))
    identified = dict(zip(table["format"], table["identified"]))
    checks = pd.DataFrame([run_check(fit, c, identified) for c in s.checks])
    curves = fit_curves(df, s, n_bootstrap=min(n_bootstrap, CURVE_BOOTSTRAP))
    info = getattr(fit, "info", {})
    notes = [f"{w} (warning of the decoupled fit)" for w in info.get("warnings", [])]
    notes.insert(0, f"ρ: {table.attrs['method']}")
    return StudyResult(s, df, table, checks, curves, fit, notes,
                       composition_table(fit, s.checks, table))


def print_result(res: StudyResult, stream=None) -> None:
    import sys

    from capscale.laws.measure import IDENTIFIED_WIDTH, describe_rho, why_not_identified

    out = stream or sys.stdout
    s = res.study
    print(f"study {s.name} ({s.figure}): {s.title}", file=out)
    print(f"ρ per representation against the study's {int(_dense(res.runs).sum())} dense runs "
          f"({res.capacity.attrs.get('method', 'decoupled law')}; 95% intervals), beside ρ from "
          "GMSE (paper's constants):", file=out)
    for _, r in res.capacity.iterrows():
        print(f"  {r['format']:<36} {describe_rho(r):<44} GMSE predicts {r['rho_gmse']:.3f}",
              file=out)
    if res.unidentified:
        why = why_not_identified(res.capacity) or "more sizes, budgets or seeds needed"
        print(f"  not identified: {', '.join(res.unidentified)}: these runs do not pin their ρ "
              f"down to an interval narrower than 0.2: {why}", file=out)
    print(f"the paper's claim: {s.claim}", file=out)
    for _, c in res.checks.iterrows():
        ratio = (f"{c['ratio']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"
                 if math.isfinite(c["ratio"]) else "—")
        print(f"  {c['claim']:<44} ratio {ratio:<24} {c['verdict']} ({c['why']})", file=out)
    if len(res.composition):
        print("  ρ of the whole against the product of its parts' ρ (95% intervals):", file=out)
    for _, c in res.composition.iterrows():
        if c["identified"]:
            both = (f"{c['rho']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}] against "
                    f"{c['product']:.3f} [{c['product_lo']:.3f}, {c['product_hi']:.3f}]")
        else:
            both = ("not identified (a ρ or the product has an interval wider than "
                    f"{IDENTIFIED_WIDTH})")
        print(f"    {c['whole']:<34} {both}", file=out)
    for k, v in res.curves.items():
        if isinstance(v, dict):
            print(f"  unified curve [{k}]: " + ", ".join(f"{p} {x:.3g}" for p, x in v.items()),
                  file=out)
        else:
            state = v if str(v).startswith("not identified") else f"not fitted ({v})"
            print(f"  unified curve [{k}]: {state}", file=out)
    print(f"verdict: {res.verdict()}", file=out)


def _dense(df: pd.DataFrame):
    from capscale.laws import representation as rep

    return pd.Series(rep.dense_rows(df), index=df.index)


def add_report_section(rep_, res: StudyResult, prefix: str = "") -> None:
    """The study's section: the claim, the ρ table, the checks, the curves and the figure."""
    from capscale.laws.measure import MEASURED_COLUMNS, unidentified_reasons, why_not_identified
    from capscale.laws.plots import plot_composition, plot_measured_capacity

    s = res.study
    rep_.section(f"Study {s.name} ({s.figure}): {s.title}",
                 f"The paper's claim: {s.claim}. ρ of each representation against the study's "
                 f"own dense runs: {res.capacity.attrs.get('method', 'decoupled law')} (95% "
                 "intervals; an interval wider than 0.2 is shown as not identified), beside ρ "
                 "predicted from "
                 f"GMSE with the paper's constants. Verdict: {res.verdict()}.")
    why = why_not_identified(res.capacity)
    rep_.table(res.capacity, f"{prefix}{s.name}_capacity",
               caption="Measured capacity." + (f" Not identified where greyed: {why}." if why
                                               else ""),
               unidentified=unidentified_reasons(res.capacity), value_columns=MEASURED_COLUMNS)
    if len(res.checks):
        rep_.table(res.checks, f"{prefix}{s.name}_checks", caption="The paper's claims.")
    curves = pd.DataFrame([{"type": k, **(v if isinstance(v, dict) else {"not_fitted": v})}
                           for k, v in res.curves.items()])
    if len(curves):
        rep_.table(curves, f"{prefix}{s.name}_curves",
                   caption="Unified curve per compression type (L, F, C).")
    path = plot_measured_capacity(res.capacity, rep_.plot_path(f"{prefix}{s.name}_rho.png"),
                                  title=f"study {s.name}: measured against predicted ρ")
    rep_.image(path, "Measured ρ (95% interval) against ρ predicted from GMSE.")
    if len(res.composition):
        path = plot_composition(res.composition, rep_.plot_path(f"{prefix}{s.name}_composition.png"),
                                title=f"study {s.name}: ρ of the whole against the product "
                                      "of its parts")
        rep_.image(path, "Composability (the paper's Fig. 6): measured ρ of each combined "
                         "representation against the product of its parts' measured ρ, both "
                         "with 95% intervals from the same bootstrap draws; on the diagonal, "
                         "capacities compose. The verdict is the ratio's interval (the claims "
                         "table), narrower than these two: their draws share the dense curve.")
    for n in res.notes:
        rep_.note(n)


# --------------------------------------------------------------- run and report


def write_study_file(out: Path, name: str, scale: str, extra: dict | None = None) -> None:
    from capscale.io import atomic_write_json

    path = out / STUDY_FILE
    old = {}
    if path.exists():
        old = json.loads(path.read_text())
        if (old.get("study"), old.get("scale")) != (name, scale):
            raise CapscaleError(f"{out} holds study {old.get('study')!r} at scale "
                                f"{old.get('scale')!r}; give another folder for {name!r} "
                                f"({scale})")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**old, "study": name, "scale": scale, **(extra or {})})


def read_study_file(out: Path) -> dict:
    path = Path(out) / STUDY_FILE
    if not path.exists():
        raise CapscaleError(f"{out} is not a study folder (no {STUDY_FILE}); run `capscale "
                            "study run NAME -o DIR` first")
    return json.loads(path.read_text())


def run_study(name: str, out: str | Path, *, scale: str = "cpu", jobs: int | None = None,
              threads: int | None = None, launcher: str | None = None, quiet: bool = False,
              reuse=()):
    """Train the study's runs into ``out`` through the sweep engine (finished runs are kept;
    a second call resumes; finished runs of the same settings in the ``reuse`` folders are
    copied in), then return the sweep outcome. Times the launch."""
    from capscale.sweep import run_sweep

    out = Path(out)
    spec = study_spec(name, scale)
    write_study_file(out, name, scale)
    t0 = time.perf_counter()
    outcome = run_sweep(spec, out, launcher=launcher, jobs=jobs, threads=threads, quiet=quiet,
                        reuse=reuse)
    info = read_study_file(out)
    info.setdefault("launches", []).append({"seconds": round(time.perf_counter() - t0, 1),
                                            "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "launched": len(outcome.launched)})
    write_study_file(out, name, scale, {"launches": info["launches"]})
    return outcome


def report_study(out: str | Path, *, n_bootstrap: int = N_BOOTSTRAP, quiet: bool = False):
    """Analyse a study folder's finished runs and write ``out/report/index.html`` and
    ``out/capacity.csv``; returns (StudyResult, report path)."""
    from capscale.io import write_table
    from capscale.report import Report
    from capscale.sweep import write_tables

    out = Path(out)
    info = read_study_file(out)
    spec = study_spec(info["study"], info["scale"])
    runs_csv, _, status = write_tables(spec, out)
    runs = pd.read_csv(runs_csv)
    if runs.empty:
        raise CapscaleError(f"{out} has no finished runs yet; run `capscale study run "
                            f"{info['study']} -o {out}`")
    res = analyse(info["study"], runs_csv, n_bootstrap=n_bootstrap, scale=info["scale"])
    write_table(res.capacity, out / "capacity.csv")
    write_table(res.checks, out / "checks.csv")
    if len(res.composition):
        write_table(res.composition, out / "composition.csv")
    rep_ = Report(out / "report", f"capscale study {info['study']}",
                  subtitle=f"{len(res.runs)} of {len(spec.runs)} runs finished "
                           f"({info['scale']} scale: "
                           f"{study_ladder(study(info['study']), info['scale']).describe()}).")
    add_report_section(rep_, res)
    path = rep_.write()
    if not quiet:
        print_result(res)
        print(f"report: {path}")
    return res, path


__all__ = ["LADDERS", "SCALES", "Check", "Ladder", "Study", "StudyResult", "add_report_section",
           "analyse", "composition_table", "catalog_table", "cpu_seconds", "print_result", "read_study_file",
           "report_study", "run_check", "run_study", "scale_ladder", "spec_dict", "studies", "study",
           "study_spec"]
