"""A published capacity curve on a user's own dense runs: predictions for any format at the
user's scale, with the curve's uncertainty carried through.

The dense runs fix A, α, B, β, E (a Chinchilla fit with its bootstrap); the curve
ρ = L·tanh(F·log_{1/4} GMSE)^C (one curve for every compressed part, weights and activations
multiplied) comes from elsewhere, each constant with a standard error. Resample s of the
result pairs bootstrap resample s of the dense fit with an independent normal draw of the
curve (truncated at zero), so every interval a prediction shows holds both uncertainties.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws.fit import FitResult, _percentiles, fit_law
from capscale.laws.forms import UnifiedLaw, nest_params

CURVE = ("L", "F", "C")


def transfer_fit(dense: pd.DataFrame, curve: dict[str, tuple[float, float]], *,
                 n_bootstrap: int = 1000, seed: int = 0, source: str = "--fix",
                 **fit_options) -> FitResult:
    """A unified fit from dense runs only and a capacity curve ``{"F": (value, sd), ...}``
    (L defaults to 1 with no uncertainty: an exact representation trains like dense)."""
    curve = dict(curve)
    curve.setdefault("L", (1.0, 0.0))
    missing = [k for k in CURVE if k not in curve]
    extra = sorted(set(curve) - set(CURVE))
    if missing or extra:
        raise CapscaleError("transferring a capacity curve to dense runs takes F, C and "
                            f"optionally L (--fix F=0.41±0.02,C=1.39±0.08); got {sorted(curve)}")
    for k, (v, sd) in curve.items():
        if not (v > 0 and sd >= 0):
            raise CapscaleError(f"--fix {k}={v}: the curve's constants must be positive")
    if n_bootstrap < 1:
        raise CapscaleError("a transferred curve carries its uncertainty through bootstrap "
                            "resamples; give --bootstrap of at least 1")
    dense_fit = fit_law(dense, "chinchilla", n_bootstrap=n_bootstrap, seed=seed, **fit_options)
    law = UnifiedLaw(["all"], capacity_groups="single")
    law.centers = dense_fit.law.centers
    rng = np.random.default_rng(seed + 1)
    B = len(dense_fit.samples)
    draws = np.empty((B, 3))
    for j, k in enumerate(CURVE):
        v, sd = curve[k]
        x = rng.normal(v, sd, B) if sd > 0 else np.full(B, v)
        while (bad := x <= 0).any():
            x[bad] = rng.normal(v, sd, int(bad.sum()))
        draws[:, j] = np.log(x)
    theta = np.concatenate([dense_fit.theta, [math.log(curve[k][0]) for k in CURVE]])
    samples = np.concatenate([dense_fit.samples, draws], axis=1)
    info = dict(dense_fit.info)
    level = info["settings"]["interval_level"]
    lo, hi = _percentiles(law.to_natural(samples), level)
    info.update({
        "law": law.name, "formula": law.formula, "reference": law.reference,
        "intervals": nest_params(law.natural_names, [[float(a), float(b)] for a, b in zip(lo, hi)]),
        "derived_eff": {},
        "transfer": {"curve": {k: {"value": curve[k][0], "sd": curve[k][1]} for k in CURVE},
                     "source": source,
                     "dense_fit": "chinchilla on the runs given (A, alpha, B, beta, E)"},
    })
    info["data"] = {**info["data"], "columns": list(info["data"].get("columns", [])) +
                    [c for c in ("w_format", "a_format") if c not in info["data"].get("columns", [])]}
    info["warnings"] = list(info.get("warnings", [])) + [
        "rho comes from a transferred capacity curve, not from these runs: no compressed run "
        "here tests it"]
    return FitResult(law, theta, samples, info)
