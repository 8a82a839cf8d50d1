"""Capacity measured from training runs, not predicted: each representation's multiplier ρ
from the decoupled law fitted against the table's own dense runs, with bootstrap intervals,
beside the prediction from its GMSE with the unified paper's constants.

A ρ whose interval is wider than :data:`IDENTIFIED_WIDTH` is marked not identified: the runs
do not pin it down, and a number shown without that mark would be read as a result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from capscale.laws import representation as rep

# a measured ρ counts as identified when its 95% interval is narrower than this
IDENTIFIED_WIDTH = 0.2


def rho_gmse(w_format: str, a_format: str = "none", constants: dict | None = None) -> float:
    """ρ predicted from GMSE alone: the product over the compressed operands of
    ρ(GMSE) = L·tanh(F·log_{1/4} GMSE)^C, by default with the unified paper's Llama/C4
    constants (L 1.0, F 0.41, C 1.39). Noise injection has a GMSE too (its relative MSE)."""
    from capscale.capacity import UNIFIED_LLAMA_C4, rho_unified

    c = constants or UNIFIED_LLAMA_C4
    out = 1.0
    for spec in (w_format, a_format):
        if not rep.is_dense(spec):
            out *= float(rho_unified(rep.spec_gmse(spec), **c))
    return out


def capacity_samples(fit) -> dict[str, np.ndarray]:
    """The bootstrap draws of every fitted multiplier of a decoupled fit, by representation
    key (joint draws: index i of every array comes from the same resample)."""
    if fit.samples is None or fit.law.name != "decoupled":
        return {}
    nat = fit.law.to_natural(fit.samples)
    names = fit.law.natural_names
    return {k: nat[:, names.index(f"eff[{k}]")] for k in fit.law.keys}


def is_identified(lo: float, hi: float, width: float = IDENTIFIED_WIDTH) -> bool:
    return bool(math.isfinite(lo) and math.isfinite(hi) and hi - lo < width)


def measured_capacity(df: pd.DataFrame, fit=None, *, n_bootstrap: int = 400, seed: int = 0,
                      key_columns: list[str] | None = None, level: float = 0.95,
                      width: float = IDENTIFIED_WIDTH) -> tuple[pd.DataFrame, object]:
    """One row per compressed representation of ``df``: ρ from the decoupled fit (given, or
    fitted here with ``n_bootstrap`` resamples), its interval at ``level``, whether it is
    identified (interval narrower than ``width``), the runs behind it, and ``rho_gmse``.
    Returns (table, fit)."""
    from capscale.laws.fit import fit_law

    if fit is None:
        fit = fit_law(df, "decoupled", n_bootstrap=n_bootstrap, seed=seed, level=level,
                      heldout=False, key_columns=key_columns)
    derived = fit.info.get("derived_eff", {})
    keys = rep.representation_keys(df, getattr(fit.law, "key_columns", None))
    rows = []
    for key in fit.law.keys:
        sel = [k == key for k in keys]
        sub = df[sel]
        w, a = str(sub["w_format"].iloc[0]), str(sub["a_format"].iloc[0])
        v, lo, hi = derived.get(key, (math.nan, math.nan, math.nan))
        rows.append({"format": key, "w_format": w, "a_format": a, "runs": int(len(sub)),
                     "rho": v, "lo": lo, "hi": hi, "width": hi - lo,
                     "identified": is_identified(lo, hi, width),
                     "rho_gmse": rho_gmse(w, a)})
    return pd.DataFrame(rows), fit


def ratio_interval(fit, num: str, den: str | list[str], level: float = 0.95) -> tuple[float, float, float]:
    """ρ[num] / ∏ρ[den] with a percentile interval from the joint bootstrap draws: e.g. the
    W×A multiplier against the product of its W-only and A-only marginals (composability),
    or one format's capacity against another's. Dense keys count as exactly 1."""
    dens = [den] if isinstance(den, str) else list(den)
    draws = capacity_samples(fit)
    derived = fit.info.get("derived_eff", {})

    def value(k):
        return 1.0 if k in fit.law.reference_keys else derived[k][0]

    def sample(k):
        return np.ones(1) if k in fit.law.reference_keys else draws.get(k, np.full(1, np.nan))

    point = value(num) / math.prod(value(k) for k in dens)
    s = sample(num)
    for k in dens:
        s = s / sample(k)
    if s.size < 2 or not np.all(np.isfinite(s)):
        return point, math.nan, math.nan
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(point), float(lo), float(hi)


def describe_rho(row) -> str:
    """``0.67 [0.62, 0.71]``, or why the number is not shown."""
    v, lo, hi = row["rho"], row["lo"], row["hi"]
    if not math.isfinite(v):
        return "not fitted"
    if not row["identified"]:
        if math.isfinite(lo) and math.isfinite(hi):
            return f"not identified (95% interval {lo:.2g} to {hi:.2g}, wider than {IDENTIFIED_WIDTH})"
        return "not identified (no interval)"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
