"""Which form of the capacity curve ρ(GMSE) the runs support: the unified law fitted once per
form (tanh, logistic, logistic(1, 0); the comparison of the unified paper's Table 4, arXiv
2506.01863), with the decoupled law (a free multiplier per format) as the floor no curve
through GMSE can beat."""

from __future__ import annotations

import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws.fit import fit_law
from capscale.laws.forms import UnifiedLaw


def compare_curves(df: pd.DataFrame, curves=tuple(UnifiedLaw.CURVES), *, decoupled: bool = True,
                   **fit_options) -> pd.DataFrame:
    """One row per capacity-curve form: parameters, in-sample and held-out log-loss RMSE, and
    the RMSE relative to the decoupled law's on the same runs. ``fit_options`` go to every
    :func:`fit_law` (``capacity_groups``, ``n_bootstrap``, ...)."""
    rows = []
    for curve in curves:
        opts = dict(fit_options)
        if curve != "tanh":
            opts.pop("fix_L", None)
        try:
            fit = fit_law(df, "unified", curve=curve, **opts)
        except CapscaleError as e:
            rows.append({"form": curve, "formula": UnifiedLaw.CURVES.get(curve, ""),
                         "n_params": None, "rmse_log_loss": None, "heldout_rmse_log_loss": None,
                         "warnings": 0, "error": str(e)})
            continue
        h = fit.info.get("heldout") or {}
        rows.append({"form": curve, "formula": UnifiedLaw.CURVES[curve],
                     "n_params": fit.law.n_params, "rmse_log_loss": fit.info["rmse_log_loss"],
                     "heldout_rmse_log_loss": h.get("rmse_log_loss"),
                     "warnings": len(fit.info.get("warnings", [])), "error": ""})
    if decoupled:
        opts = {k: v for k, v in fit_options.items()
                if k not in ("capacity_groups", "split_composed", "fix_L", "curve")}
        try:
            fit = fit_law(df, "decoupled", **opts)
            h = fit.info.get("heldout") or {}
            rows.append({"form": "decoupled", "formula": "a free multiplier per format",
                         "n_params": fit.law.n_params, "rmse_log_loss": fit.info["rmse_log_loss"],
                         "heldout_rmse_log_loss": h.get("rmse_log_loss"),
                         "warnings": len(fit.info.get("warnings", [])), "error": ""})
        except CapscaleError as e:
            rows.append({"form": "decoupled", "formula": "a free multiplier per format",
                         "n_params": None, "rmse_log_loss": None,
                         "heldout_rmse_log_loss": None, "warnings": 0, "error": str(e)})
    table = pd.DataFrame(rows)
    rmse = pd.to_numeric(table["rmse_log_loss"], errors="coerce")
    ref = rmse[table["form"] == "decoupled"]
    table["rmse_vs_decoupled"] = rmse / float(ref.iloc[0]) if len(ref) and ref.notna().all() else None
    return table
