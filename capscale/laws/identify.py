"""Which fitted numbers the runs actually pin down.

A parameter is *not identified* when its term is negligible for every run, when its bootstrap
interval is not finite or spans more than a factor 100, or when an exponent's interval reaches
zero (a loss that does not fall with N or D), or when the coefficient of its power term is not
identified (the exponent of that term is free with it). A capacity multiplier ρ (``eff[...]``) is held
to the rule of a measured capacity: its interval must be narrower than IDENTIFIED_WIDTH.
Multipliers and capacity curves are read through α, so they are not identified either when α
is not. Reports and the demo show such numbers as
not identified, never as results.
"""

from __future__ import annotations

import math

import numpy as np

# a positive parameter whose interval spans more than this factor is not identified
MAX_RATIO = 100.0
# a capacity multiplier ρ counts as identified when its 95% interval is narrower than this
IDENTIFIED_WIDTH = 0.2
EXPONENTS = {"alpha", "beta", "d", "f"}
# parameters read through alpha (the scale of N): multipliers and capacity curves
_THROUGH_ALPHA = ("eff[", "L", "F", "C", "A_rho", "B_rho")


def _reference(name: str) -> bool:
    """``eff[none/none]``: the uncompressed reference, 1 by definition."""
    from capscale.laws import representation as rep

    return name.startswith("eff[") and rep.is_dense_key(name[4:-1])


def _ratio_reason(v: float, lo: float, hi: float, positive: bool,
                  capacity: bool = False) -> str | None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"its bootstrap interval [{lo:.3g}, {hi:.3g}] is not finite"
    if capacity and hi - lo >= IDENTIFIED_WIDTH:
        return (f"its interval {lo:.3g} to {hi:.3g} is wider than {IDENTIFIED_WIDTH} (the rule "
                "for a capacity)")
    if positive and lo > 0 and hi / lo > MAX_RATIO:
        return f"its interval spans {lo:.3g} to {hi:.3g} (a factor {hi / lo:.3g})"
    if positive and lo <= 0:
        return f"its interval reaches {lo:.3g}"
    return None


def unidentified(law, natural: np.ndarray, lo=None, hi=None, dead=(), derived_eff=None) -> dict:
    """Natural parameter name (and ``eff[KEY]`` for derived multipliers) -> why it is not
    identified; names that are identified are absent."""
    names = law.natural_names
    out: dict[str, str] = {}
    for j, name in enumerate(names):
        if j in dead:
            out[name] = "its term is below 0.1% of the loss for every run"
            continue
        v = float(natural[j])
        if name in EXPONENTS and v <= 0:
            out[name] = f"the exponent came out {v:.3g}: the loss does not fall with the runs' size"
            continue
        if lo is None:
            continue
        positive = j in getattr(law, "natural_log_params", law.log_params) or name in EXPONENTS
        capacity = name.startswith("eff[") and not _reference(name)
        why = _ratio_reason(v, float(lo[j]), float(hi[j]), positive, capacity)
        if why:
            out[name] = why
    for key, (v, elo, ehi) in (derived_eff or {}).items():
        name = f"eff[{key}]"
        if name in out or not math.isfinite(v):
            continue
        if elo is None or hi is None:
            continue
        if _reference(name):  # the dense reference: 1 by definition
            continue
        why = _ratio_reason(v, float(elo), float(ehi), True, capacity=True)
        if why:
            out[name] = why
    for coef, exponent in (("A", "alpha"), ("B", "beta")):
        # a power term whose coefficient the runs do not pin down leaves its exponent free too
        # (two token budgets: B·D^(−β) passes through both whatever β is)
        if coef in out and exponent in names and exponent not in out:
            out[exponent] = f"its term's coefficient {coef} is not identified ({out[coef]})"
    if "alpha" in out:
        for name in list(names) + [f"eff[{k}]" for k in (derived_eff or {})]:
            if name not in out and name.startswith(_THROUGH_ALPHA) and not _reference(name):
                out[name] = "it is read through α, which these runs do not identify"
    return out


def fit_unidentified(fit) -> dict:
    """What a fit does not identify: recorded when it was fitted, or worked out again from its
    parameters and bootstrap (fits saved before it was recorded)."""
    if "unidentified" in fit.info:
        return dict(fit.info["unidentified"])
    lo = hi = None
    if fit.samples is not None and len(fit.samples):
        from capscale.laws.fit import _percentiles

        lo, hi = _percentiles(fit.law.to_natural(fit.samples), fit.info["settings"]["interval_level"])
    derived = {k: tuple(math.nan if x is None else x for x in v)
               for k, v in fit.info.get("derived_eff", {}).items()}
    return unidentified(fit.law, fit.natural, lo, hi, (), derived)
