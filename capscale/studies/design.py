"""Design before compute: what interval each ρ of a sweep would get, simulated from a prior law
before a single step is trained (``capscale study run --dry-run``, ``capscale sweep --dry-run``).

The prior is a Chinchilla law for the dense runs times ρ from GMSE with the unified paper's
constants for the compressed ones. At CPU scale the Chinchilla constants are the fit of the CPU
ladder's dense runs (BENCHMARKS.md, "The CPU ladder"); at paper scale they are the fit of the
QuEST runs shipped with the package. Losses are drawn with seed noise around the prior and
refitted with capscale's own fitter (:func:`capscale.laws.design.simulate_design`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from capscale.laws.measure import IDENTIFIED_WIDTH, rho_gmse, shared_budget

# Single-run scatter of the final validation loss (sd, nats) assumed by the simulation: the
# residual sd of the demo's study on the data-rich CPU ladder (27 runs at 1M tokens with two
# seeds for the dense curve and INT4, fitted at that budget: 0.028). The studies since agree:
# seeds of one size and format spread 0.019-0.025 (pooled within each of noise, fp, vq and
# sparse; 0.032 in lsq, whose 6-bit LSQ runs scatter by 0.13), and those four studies' budget
# fits leave residuals of 0.022-0.034 (STUDIES.md); a pair of seeds of width 24 lands 0.105
# apart.
SEED_NOISE = 0.028
N_SIMS = 200
# The data-rich CPU ladder's dense runs fitted with the Chinchilla law: the 35 distinct dense
# runs of the noise, fp, lsq, vq and sparse studies (5 widths at 256k and 512k tokens, and at 1M
# with five seeds; `capscale fit --law chinchilla` on them). The floor E fits at its bound of 0
# (these 7k-60k models cannot tell it apart from B·D^(−β)); what the design check uses is the
# curve's slope at the compressed runs' budget, 0.21-0.25 nats per e-fold of N at widths 24-40,
# as the studies measured. (The first prior, the demo's 15 dense runs, had 0.25-0.17 there; the
# intervals it simulated came out about 10-15% wider than this one's.)
CPU_PRIOR: dict | None = {"E": 0.0, "A": 6.93162, "alpha": 0.150513, "B": 28.40074,
                          "beta": 0.193617}
# Runs smaller than this many non-embedding parameters take the CPU prior, larger ones the
# QuEST one.
CPU_PRIOR_MAX_N = 5e6


def chinchilla_prior(params: dict):
    """A callable prior: the loss of every run of a runs frame under A·(N·ρ)^(−α) + B·D^(−β) + E
    with ρ from GMSE (paper's constants) for its weight and activation formats."""
    E, A, alpha, B, beta = (params[k] for k in ("E", "A", "alpha", "B", "beta"))

    def prior(runs: pd.DataFrame) -> np.ndarray:
        rho = np.array([rho_gmse(w, a) for w, a in zip(runs["w_format"], runs["a_format"])])
        N, D = runs["N"].to_numpy(float), runs["D"].to_numpy(float)
        return E + A * (N * np.maximum(rho, 1e-6)) ** (-alpha) + B * D ** (-beta)

    return prior


def quest_params() -> dict:
    """Chinchilla constants of the QuEST runs (their dense runs, fitted once, cached)."""
    global _QUEST
    if _QUEST is None:
        from capscale.laws import fit_law, load_builtin
        from capscale.laws import representation as rep

        q = load_builtin("quest")
        dense = q[rep.dense_rows(q)].reset_index(drop=True)
        f = fit_law(dense, "chinchilla", n_bootstrap=0, heldout=False)
        _QUEST = {k: f.param(k) for k in ("E", "A", "alpha", "B", "beta")}
    return _QUEST


_QUEST: dict | None = None


def _on_cpu_ladder(runs: pd.DataFrame) -> bool:
    """Whether these runs take the CPU ladder's prior and noise (else the QuEST runs')."""
    return CPU_PRIOR is not None and float(runs["N"].max()) <= CPU_PRIOR_MAX_N


def noise_for(runs: pd.DataFrame) -> tuple[float, str]:
    """The seed noise the simulation assumes for these runs and where it comes from: on the
    CPU ladder, its measured scatter; at larger scale, the scatter of the QuEST runs around
    their unified fit (the robust residual sd that `capscale plan` takes; the CPU ladder's
    short runs scatter about twice as much)."""
    if _on_cpu_ladder(runs):
        return SEED_NOISE, "the CPU ladder's measured seed scatter"
    from capscale.laws.builtin_fits import load_fit, residual_scale

    return residual_scale(load_fit("builtin:quest-unified"))[0], \
        "the QuEST runs' scatter around their unified fit"


def prior_for(runs: pd.DataFrame) -> tuple[dict, str]:
    """The prior's constants for these runs and where they come from."""
    if _on_cpu_ladder(runs):
        return CPU_PRIOR, "the CPU ladder's dense fit"
    return quest_params(), "the QuEST runs' dense fit"


def runs_frame(spec) -> pd.DataFrame:
    """The planned runs of a sweep spec as a runs frame (N, D, formats, seed) plus the
    training settings that key a representation (gradient rules)."""
    return pd.DataFrame([{"N": r.n_params, "D": r.tokens, "w_format": r.config.w_format,
                          "a_format": r.config.a_format, "seed": r.config.seed,
                          "grad": r.config.grad, "sparse_grad": r.config.sparse_grad}
                         for r in spec.runs])


def simulate(spec, *, noise: float | None = None, n_sims: int = N_SIMS,
             seed: int = 0) -> pd.DataFrame:
    """The interval each compressed representation's ρ would get: one row per W/A pair with
    ρ under the prior, the 95% range of the refitted ρ over simulated seeds, its width, and
    whether it would be identified (narrower than IDENTIFIED_WIDTH). Representations that
    differ only in training method (LSQ against trust) share a GMSE and so a prior ρ; the
    simulation treats them as one format (their interval is that of either). ``noise``: the
    loss's seed scatter in nats (by default :func:`noise_for` the runs)."""
    from capscale.errors import CapscaleError
    from capscale.laws import representation as rep

    runs = runs_frame(spec)
    dense = rep.dense_rows(runs)
    empty = pd.DataFrame(columns=["format", "rho_prior", "lo", "hi", "width", "identified"])
    try:
        from capscale.laws.design import simulate_design
    except ImportError:  # the simulator ships with capscale.laws.design
        empty.attrs["why"] = "no design simulator in this installation (capscale.laws.design)"
        return empty
    if dense.all():
        empty.attrs["why"] = "no compressed runs: no capacity to measure"
        return empty
    if not dense.any():
        empty.attrs["why"] = ("no dense runs: NOT identified, ρ is measured against the sweep's "
                              "own dense runs; add a dense ladder")
        return empty
    params, source = prior_for(runs)
    noise_source = "given"
    if noise is None:
        noise, noise_source = noise_for(runs)
    sim = runs[["N", "D", "w_format", "a_format", "seed"]].drop_duplicates().reset_index(drop=True)
    if shared_budget(sim) is not None:
        out = simulate_at_budget(sim, chinchilla_prior(params), noise=noise, n_sims=n_sims,
                                 seed=seed)
        out.attrs.update(prior=source, noise=noise, noise_source=noise_source, n_sims=n_sims,
                         method="ρ read off the dense curve at the compressed runs' budget")
        return out
    try:
        res = simulate_design(sim, chinchilla_prior(params), noise=noise, n_sims=n_sims,
                              seed=seed)
    except CapscaleError as e:
        empty.attrs["why"] = f"NOT identified: the decoupled law cannot be fitted to this design ({e})"
        return empty
    width = 2.0 * res["half_width"].to_numpy(float)
    prior_rho = [rho_gmse(w, a) for w, a in zip(res["w_format"], res["a_format"])]
    out = pd.DataFrame({"format": res["format"], "rho_prior": prior_rho,
                        "lo": res["rho_lo"], "hi": res["rho_hi"], "width": width,
                        "identified": [bool(i) and math.isfinite(w) and w < IDENTIFIED_WIDTH
                                       for i, w in zip(res["identified"], width)]})
    out.attrs.update(prior=source, noise=noise, noise_source=noise_source, n_sims=n_sims)
    return out


def simulate_at_budget(runs: pd.DataFrame, prior, *, noise: float, n_sims: int,
                       seed: int = 0) -> pd.DataFrame:
    """The design check for a sweep whose compressed runs share one budget: losses drawn from
    the prior with seed noise, ρ refitted at that budget as the analysis will
    (:mod:`capscale.laws.budget_fit`), the central 95% of the refits per format."""
    from capscale.laws.budget_fit import rho_columns
    from capscale.laws.measure import runs_at_budget

    at, compressed, _, index = runs_at_budget(runs, shared_budget(runs))
    rng = np.random.default_rng(seed)
    Y = prior(at)[:, None] + noise * rng.standard_normal((len(at), n_sims))
    draws = rho_columns(at["N"].to_numpy(float), index, len(compressed), Y)
    rows = []
    for i, key in enumerate(compressed):
        first = index.index(i)
        d = draws[i]
        ok = np.isfinite(d)
        lo, hi = np.quantile(d[ok], [0.025, 0.975]) if ok.mean() >= 0.9 else (math.nan, math.nan)
        width = hi - lo
        rows.append({"format": key,
                     "rho_prior": rho_gmse(at["w_format"][first], at["a_format"][first]),
                     "lo": lo, "hi": hi, "width": width,
                     "identified": bool(math.isfinite(width) and width < IDENTIFIED_WIDTH)})
    return pd.DataFrame(rows)


def describe(table: pd.DataFrame) -> str:
    if "why" in table.attrs:
        return f"design: {table.attrs['why']}"
    lines = [f"design check: ρ refitted from {table.attrs.get('n_sims')} simulated sweeps "
             f"(prior: {table.attrs.get('prior')}, ρ from GMSE with the paper's constants; "
             f"seed noise {table.attrs.get('noise'):.3g} nats, "
             f"{table.attrs.get('noise_source', 'given')}):"]
    for _, r in table.iterrows():
        if r["identified"]:
            state = f"identified: 95% of fits in [{r['lo']:.3f}, {r['hi']:.3f}], width {r['width']:.3f}"
        elif math.isfinite(r["width"]):
            state = (f"NOT identified: 95% of fits span {r['width']:.3f} (wider than "
                     f"{IDENTIFIED_WIDTH}; about {(r['width'] / IDENTIFIED_WIDTH) ** 2:.1f}× "
                     "the runs at this budget would narrow it enough)")
        else:
            state = "NOT identified: the fit does not pin it down"
        lines.append(f"  {r['format']:<36} prior ρ {r['rho_prior']:.3f}  {state}")
    bad = int((~table["identified"]).sum())
    lines.append("  every ρ would be identified" if not bad else
                 f"  {bad} of {len(table)} would not be identified: add sizes or seeds at the "
                 "compressed runs' budget before training (intervals narrow about as "
                 "1/√runs)")
    return "\n".join(lines)


def print_plan(name: str, scale: str, out: Path, *, launcher: str | None = None,
               jobs: int | None = None, reuse=()) -> None:
    """A study's dry run: its runs and cost (as ``capscale sweep --dry-run``), its estimated
    CPU time, and the design check."""
    from capscale.studies import cpu_seconds, study_spec
    from capscale.sweep import run_sweep

    spec = study_spec(name, scale)
    run_sweep(spec, out, launcher=launcher, jobs=jobs, dry_run=True, reuse=reuse)
    if scale == "cpu":
        print(f"CPU time: about {cpu_seconds(spec) / 3600:.1f} h on a quiet 2-core machine, two "
              "runs at once")
    print(describe(simulate(spec)))
