"""Checks of the assumptions the compressed-scaling laws rest on.

- Data independence: the laws treat a format's multiplier as independent of the data.
  Fit one multiplier per format *per tokens-per-parameter ratio* (sharing A, α, B, β, E)
  and see whether the multipliers at different ratios agree within their intervals.
- Composability: the unified law multiplies capacities. For formats on a grid of two axes
  (weight × activation format; sparsity × quantization), compare each fitted multiplier with
  the product of its marginals (the one-axis formats), as the unified paper does with the
  element-wise absolute error.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.fit import FitResult, fit_law
from capscale.laws.table import size_groups

RATIO_KEY = "_key_at_ratio"


def tokens_per_param_groups(df: pd.DataFrame, rel_tol: float = 0.15) -> tuple[np.ndarray, list[float]]:
    """Group runs by tokens per parameter (D/N, or a ``tokens_per_param`` column); ratios
    within ``rel_tol`` of each other are one group, labelled by its median, rounded."""
    tpp = (df["tokens_per_param"].to_numpy(float) if "tokens_per_param" in df.columns
           else (df["D"] / df["N"]).to_numpy(float))
    ids = size_groups(tpp, rel_tol=rel_tol)
    labels = [float(_round_sig(np.median(tpp[ids == g]))) for g in range(ids.max() + 1)]
    return ids, labels


def _round_sig(x: float, sig: int = 2) -> float:
    return round(x, -int(math.floor(math.log10(abs(x)))) + sig - 1) if x else 0.0


def data_independence(df: pd.DataFrame, *, rel_tol: float = 0.15, key_columns=None,
                      n_bootstrap: int = 300, level: float = 0.95, seed: int = 0,
                      n_jobs: int | None = None, **fit_options) -> pd.DataFrame:
    """Multiplier of every compressed format at every tokens-per-parameter ratio it was run
    at, from one decoupled fit whose keys are (format, ratio); dense runs are the reference
    at every ratio. Returns one row per (format, ratio) with eff and its interval, and per
    format whether all its ratios agree (every pair of intervals overlaps)."""
    ids, labels = tokens_per_param_groups(df, rel_tol)
    keys = rep.representation_keys(df, key_columns)
    dense = rep.dense_rows(df)
    work = df.copy()
    work[RATIO_KEY] = [k if d else f"{k}@{labels[g]:g}" for k, d, g in zip(keys, dense, ids)]
    fit = fit_law(work, "decoupled", key_columns=[RATIO_KEY], n_bootstrap=n_bootstrap,
                  level=level, seed=seed, n_jobs=n_jobs, heldout=False, **fit_options)
    rows = []
    for key, g in sorted({(k, g) for k, d, g in zip(keys, dense, ids) if not d},
                         key=lambda kg: (keys.index(kg[0]), kg[1])):
        name = f"eff[{key}@{labels[g]:g}]"
        lo, hi = fit.interval(name)
        n_runs = int(np.sum([(k == key) and (i == g) for k, i in zip(keys, ids)]))
        rows.append({"format": key, "tokens_per_param": labels[g], "n_runs": n_runs,
                     "eff": fit.param(name), "eff_lo": lo, "eff_hi": hi})
    table = pd.DataFrame(rows)
    if table.empty:
        raise CapscaleError("data independence needs compressed runs; the table has only dense ones")
    agree = {}
    for key, grp in table.groupby("format", sort=False):
        if len(grp) < 2:
            agree[key] = None
            continue
        lo, hi = grp["eff_lo"].to_numpy(), grp["eff_hi"].to_numpy()
        agree[key] = bool(lo.max() <= hi.min())  # all intervals share a point
    table["n_ratios"] = table["format"].map(table.groupby("format").size())
    table["agree"] = table["format"].map(agree)
    table.attrs["fit"] = fit
    return table


def composability(source: FitResult | pd.DataFrame, *, assume_symmetric: bool = False,
                  n_bootstrap: int = 0, **fit_options) -> pd.DataFrame:
    """Fitted multipliers of two-axis formats against the product of their marginals.

    Axes: weight format × activation format (tables with ``w_format``/``a_format``), or,
    for one ``format`` per run, the first component of a ``+`` composition × the rest
    (``sparse0.5+int4`` -> ``sparse0.5`` × ``int4``). A marginal is the multiplier of the
    format with the other axis uncompressed. With ``assume_symmetric``, a missing activation
    marginal is taken from the weight marginal of the same spec (and vice versa); such cells
    are marked.
    """
    fit = source if isinstance(source, FitResult) else fit_law(
        source, "decoupled", n_bootstrap=n_bootstrap, heldout=False, **fit_options)
    eff = {k: v[0] for k, v in fit.info.get("derived_eff", {}).items()}
    if not eff:
        raise CapscaleError("composability needs a fit with a multiplier per format (decoupled or unified)")
    sep = rep.KEY_SEPARATOR
    rows = []
    for key, value in eff.items():
        axes = _axes(key, sep)
        if axes is None:
            continue
        x, y = axes
        if rep.is_dense(x) or rep.is_dense(y):
            continue
        mx, my, assumed = _marginal(eff, x, "x", sep), _marginal(eff, y, "y", sep), []
        if assume_symmetric and mx is None:
            mx = _marginal(eff, x, "y", sep)
            assumed.append("x")
        if assume_symmetric and my is None:
            my = _marginal(eff, y, "x", sep)
            assumed.append("y")
        product = mx * my if mx is not None and my is not None else math.nan
        rows.append({"format": key, "axis_x": x, "axis_y": y, "eff": value,
                     "marginal_x": math.nan if mx is None else mx,
                     "marginal_y": math.nan if my is None else my,
                     "product": product, "abs_error": abs(value - product),
                     "assumed_symmetric": ",".join(a for a in assumed if
                                                   (mx if a == "x" else my) is not None)})
    table = pd.DataFrame(rows, columns=["format", "axis_x", "axis_y", "eff", "marginal_x",
                                        "marginal_y", "product", "abs_error", "assumed_symmetric"])
    table.attrs["mean_abs_error"] = float(np.nanmean(table["abs_error"])) if len(table) and \
        np.isfinite(table["abs_error"]).any() else math.nan
    table.attrs["axes"] = ("weights", "activations") if _is_wa(fit) else ("first", "rest")
    return table


def _is_wa(fit: FitResult) -> bool:
    cols = fit.info["data"].get("columns", [])
    return "w_format" in cols or "a_format" in cols


def _axes(key: str, sep: str):
    if sep in key:
        parts = key.split(sep)
        return (parts[0], parts[1]) if len(parts) == 2 else None
    comps = rep.split_components(key)
    if len(comps) < 2:
        return None
    return comps[0], "+".join(comps[1:])


def _marginal(eff: dict, spec: str, axis: str, sep: str):
    """Multiplier of ``spec`` on one axis with the other uncompressed."""
    for key, value in eff.items():
        if sep in key:
            a, b = key.split(sep, 1)
            if axis == "x" and a == spec and rep.is_dense(b):
                return value
            if axis == "y" and b == spec and rep.is_dense(a):
                return value
        elif key == spec:
            return value
    return None
