"""Experiment design: the cheapest sweep that measures each format's capacity ρ to a target
precision, written as a sweep spec for ``capscale sweep``.

A client of ``laws`` (the law, its fitter, the asymptotic precision and the simulator in
:mod:`capscale.laws.design`) and of ``sweep`` (run expansion and its cost model); it never
trains. The steps:

1. candidates: every (size, tokens per parameter, format) of a ladder, dense included, each
   priced in accelerator-hours by :func:`capscale.sweep.cost.estimate`;
2. search: seeds per candidate, chosen on the asymptotic half-widths at the prior
   (:func:`~capscale.laws.design.search_design`);
3. confirmation: the chosen design simulated (draws from the prior with noise, each refitted
   by capscale's own fitter); a format whose simulated half-width misses the target has its
   target tightened by the ratio and the search is repeated (a few rounds at most);
4. the grids the user would otherwise run, simulated the same way: every candidate once, and
   every size × format at one tokens-per-parameter ratio (the papers' grids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.design import as_fit, search_design, simulate_design
from capscale.laws.fit import FitResult
from capscale.runrecord import is_dense_run

# Model ladders and token budgets. paper: the unified paper's ladder (Table 2) with its
# tokens per parameter (about 100; also 25, 50, 200), trained as in its quantization grid.
LADDERS = {
    "paper": {"sizes": ["30M", "50M", "100M", "200M"], "tokens_per_param": [25, 50, 100, 200],
              "grid_tokens_per_param": 100,
              "train": {"data": "c4", "tokenizer": "hf:meta-llama/Llama-2-7b-hf",
                        "grad": "trust", "seq_len": 512, "batch_tokens": 262144}},
    "cpu": {"sizes": ["30k", "100k", "350k", "1M"], "tokens_per_param": [10, 20, 40],
            "grid_tokens_per_param": 20, "train": {}},
}
MAX_ROUNDS = 4


def format_pair(spec: str) -> tuple[str, str]:
    """``int4`` -> (int4, int4): one spec names both operands; ``W/A`` names each."""
    if rep.KEY_SEPARATOR in spec:
        w, a = spec.split(rep.KEY_SEPARATOR, 1)
        return w.strip(), a.strip()
    return spec.strip(), spec.strip()


def candidates(formats: list[str], *, scale: str = "paper", sizes: list[str] | None = None,
               tokens_per_param: list[float] | None = None, train: dict | None = None,
               cost: dict | None = None) -> pd.DataFrame:
    """Every (size, tokens per parameter, format) of the ladder, dense runs included: one row
    per run with ``size``, ``tokens_per_param``, ``w_format``, ``a_format``, ``N`` (the
    model's non-embedding parameters), ``D`` (tokens) and ``hours`` (its cost)."""
    from capscale.sweep.cost import estimate
    from capscale.sweep.spec import spec_from_dict

    if scale not in LADDERS:
        raise CapscaleError(f"--scale {scale!r}: choose one of {', '.join(LADDERS)}")
    if not formats:
        raise CapscaleError("give at least one format to measure (--format SPEC)")
    ladder = LADDERS[scale]
    pairs = [format_pair(f) for f in formats]
    if any(is_dense_run(w, a) for w, a in pairs):
        raise CapscaleError("the dense format is always included; name compressed formats only")
    spec = spec_from_dict({
        "name": "plan-candidates",
        "grid": {"size": list(sizes or ladder["sizes"]),
                 "tokens_per_param": [float(t) for t in (tokens_per_param or ladder["tokens_per_param"])],
                 "formats": [["none", "none"]] + [list(p) for p in pairs]},
        "train": dict(train if train is not None else ladder["train"]),
        "cost": dict(cost or {}),
    })
    est = estimate(spec)
    rows = []
    for i, r in enumerate(spec.runs):
        c = r.config
        rows.append({"size": c.size, "tokens_per_param": c.tokens_per_param,
                     "w_format": c.w_format, "a_format": c.a_format, "N": float(r.n_params),
                     "D": float(r.tokens), "hours": est.hours_of(i)})
    out = pd.DataFrame(rows)
    out.attrs["cost"] = est
    return out


def hours_to_target(hours: float, half_widths, target: float) -> float:
    """Accelerator-hours a design needs to reach ``target`` by repeating all its runs with
    more seeds (half-widths shrink as 1/√seeds); inf when it does not identify ρ."""
    hw = np.asarray(half_widths, dtype=np.float64)
    if not np.all(np.isfinite(hw)):
        return math.inf
    return float(hours * max(1.0, float(np.max((hw / target) ** 2))))


@dataclass
class Plan:
    runs: pd.DataFrame  # the chosen runs, one row per seed
    predicted: pd.DataFrame  # asymptotic half-widths of the chosen design
    confirmed: pd.DataFrame  # simulated half-widths of the chosen design
    comparisons: dict  # label -> {"runs", "hours", "confirmed"}: the grids the plan replaces
    hours: float
    noise: float
    target: dict
    rounds: int
    met: bool
    done: pd.DataFrame | None = None  # runs already done (sequential design)
    notes: list[str] = field(default_factory=list)


def make_plan(formats: list[str], prior: FitResult, *, target: float, noise: float | None = None,
              scale: str = "paper", sizes: list[str] | None = None,
              tokens_per_param: list[float] | None = None, train: dict | None = None,
              cost: dict | None = None, n_sims: int = 400, seed: int = 0,
              done: pd.DataFrame | None = None, max_replicas: int = 16,
              compare_grids: bool = True) -> Plan:
    """The cheapest design found that measures every format's ρ to ``target`` (95%
    half-width), confirmed by ``n_sims`` simulated refits. ``done``: a runs table of runs
    already trained (sequential design): they count, cost nothing, and the plan says what
    to add."""
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise CapscaleError(f"--target must be a positive half-width of ρ, not {target!r}")
    if n_sims < 200:
        raise CapscaleError(f"confirm with at least 200 simulated refits, not {n_sims}")
    if noise is None:
        from capscale.laws.builtin_fits import residual_scale

        noise, _ = residual_scale(prior)
    cand = candidates(formats, scale=scale, sizes=sizes, tokens_per_param=tokens_per_param,
                      train=train, cost=cost)
    keys = [f"{w}{rep.KEY_SEPARATOR}{a}" for w, a in (format_pair(f) for f in formats)]
    fixed = np.zeros(len(cand))
    notes: list[str] = []
    if done is not None:
        fixed, extra = _match_done(cand, done)
        if len(extra):
            notes.append(f"{len(extra)} finished run(s) are off the ladder; they count as they are")
            extra = extra.assign(hours=np.inf)
            cand = pd.concat([cand, extra], ignore_index=True)
            fixed = np.concatenate([fixed, np.ones(len(extra))])
    cost_h = cand["hours"].to_numpy()
    prior = as_fit(cand, prior)  # a callable prior is fitted once, not once per design
    search_cost = np.where(np.isfinite(cost_h), cost_h, 1e12)
    targets = {k: float(target) for k in keys}
    met = False
    for rounds in range(1, MAX_ROUNDS + 1):  # noqa: B007 (reported)
        counts, predicted = search_design(cand, prior, cost=search_cost, target=targets,
                                          noise=noise, fixed=fixed, max_replicas=max_replicas)
        total = fixed + counts
        design = _expand(cand, total)
        confirmed = simulate_design(design, prior, noise=noise, n_sims=n_sims, seed=seed)
        hw = dict(zip(confirmed["format"], confirmed["half_width"]))
        missed = {k: hw.get(k, math.nan) for k in keys
                  if not (np.isfinite(hw.get(k, math.nan)) and hw[k] <= target)}
        if not missed:
            met = True
            break
        for k, h in missed.items():
            ratio = target / h if np.isfinite(h) and h > 0 else 0.5
            targets[k] = targets[k] * min(max(ratio, 0.5), 0.97)
    new = _expand(cand, counts, seed_offset=fixed)
    hours = float((cand["hours"].to_numpy() * counts).sum())
    comparisons = {}
    on_ladder = np.isfinite(cost_h)
    g_tpp = LADDERS[scale]["grid_tokens_per_param"]
    tpp = cand["tokens_per_param"].to_numpy(dtype=float)
    for label, sel in () if not compare_grids else (("full grid (every candidate, one seed)", on_ladder),
                       (f"grid at {g_tpp:g} tokens per parameter (one seed)",
                        on_ladder & np.isclose(tpp, g_tpp))):
        if sel.any() and not any(len(c["runs"]) == int(sel.sum()) for c in comparisons.values()):
            runs = cand[sel].reset_index(drop=True).assign(seed=0)
            comparisons[label] = {
                "runs": runs, "hours": float(runs["hours"].sum()),
                "confirmed": simulate_design(runs, prior, noise=noise, n_sims=n_sims, seed=seed)}
    return Plan(runs=new, predicted=predicted, confirmed=confirmed, comparisons=comparisons,
                hours=hours, noise=noise, target={k: float(target) for k in keys},
                rounds=rounds, met=met, done=done, notes=notes)


def _expand(cand: pd.DataFrame, counts: np.ndarray, seed_offset: np.ndarray | None = None) -> pd.DataFrame:
    """One row per seed: candidate i repeated counts[i] times with seeds offset.. ."""
    rows = []
    for i, c in enumerate(np.asarray(counts, dtype=int)):
        start = int(seed_offset[i]) if seed_offset is not None else 0
        for s in range(start, start + c):
            rows.append({**cand.iloc[i].to_dict(), "seed": s})
    cols = list(cand.columns) + ["seed"]
    return pd.DataFrame(rows, columns=cols)


def _match_done(cand: pd.DataFrame, done: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Count finished runs per candidate (same formats, N within 5%, D within 5%); the rest
    are returned as extra rows."""
    for c in ("N", "D", "w_format", "a_format"):
        if c not in done.columns:
            raise CapscaleError(f"the runs table of finished runs needs column {c!r} "
                                f"(it has {list(done.columns)})")
    fixed = np.zeros(len(cand))
    extra = []
    cN, cD = cand["N"].to_numpy(), cand["D"].to_numpy()
    for _, r in done.iterrows():
        m = np.flatnonzero((cand["w_format"] == str(r["w_format"])).to_numpy()
                           & (cand["a_format"] == str(r["a_format"])).to_numpy()
                           & (np.abs(cN / float(r["N"]) - 1) < 0.05)
                           & (np.abs(cD / float(r["D"]) - 1) < 0.05))
        if m.size:
            fixed[m[0]] += 1
        else:
            extra.append({"size": None, "tokens_per_param": float(r["D"]) / float(r["N"]),
                          "w_format": str(r["w_format"]), "a_format": str(r["a_format"]),
                          "N": float(r["N"]), "D": float(r["D"])})
    return fixed, pd.DataFrame(extra, columns=["size", "tokens_per_param", "w_format",
                                                "a_format", "N", "D"])


def plan_toml(plan: Plan, *, name: str, scale: str = "paper", train: dict | None = None,
              cost: dict | None = None) -> str:
    """The plan's new runs as a sweep spec (one [[runs]] table per run), checked by parsing
    it back."""
    from capscale.sweep.spec import spec_from_text

    train = dict(train if train is not None else LADDERS[scale]["train"])
    lines = [f"# capscale plan: {len(plan.runs)} runs, about {plan.hours:,.1f} accelerator-hours;",
             "# confirmed 95% half-widths of rho: "
             + ", ".join(f"{k} {v:.3g}" for k, v in zip(plan.confirmed["format"],
                                                        plan.confirmed["half_width"])),
             f"# (target {max(plan.target.values()):g}, loss noise {plan.noise:.3g} nats)",
             f"name = {_toml_str(name)}", ""]
    if train:
        lines.append("[train]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in train.items()]
        lines.append("")
    if cost:
        lines.append("[cost]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in cost.items() if v is not None]
        lines.append("")
    for _, r in plan.runs.iterrows():
        lines.append("[[runs]]")
        lines.append(f"size = {_toml_str(r['size'])}")
        lines.append(f"tokens_per_param = {_toml_value(float(r['tokens_per_param']))}")
        lines.append(f"w_format = {_toml_str(r['w_format'])}")
        lines.append(f"a_format = {_toml_str(r['a_format'])}")
        lines.append(f"seed = {int(r['seed'])}")
        lines.append("")
    text = "\n".join(lines)
    if len(plan.runs):
        spec_from_text(text, source="plan.toml")
    return text


def _toml_str(s) -> str:
    import json

    return json.dumps(str(s))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return _toml_str(v)
