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


def data_independence(df: pd.DataFrame, *, fit: FitResult | None = None, rel_tol: float = 0.15,
                      key_columns=None, n_bootstrap: int = 300, level: float = 0.95,
                      seed: int = 0, n_jobs: int | None = None) -> pd.DataFrame:
    """Multiplier of every compressed format at every tokens-per-parameter ratio it was run
    at, with the rest of the law (A, α, B, β, E) held at the decoupled fit to all runs.

    Holding the law fixed matters: with a free multiplier per ratio, the data term B·D^(−β)
    is no longer pinned by the compressed runs, and in sweeps whose dense runs share one
    ratio (D ∝ N) it is not pinned at all. Each (format, ratio) multiplier is the 1-D Huber
    optimum over that group's runs; its interval comes from the bootstrap fits of the law
    combined with a resample of the group's runs. A format's ratios *agree* when all their
    intervals share a point.
    """
    if fit is None:
        fit = fit_law(df, "decoupled", key_columns=key_columns, n_bootstrap=n_bootstrap,
                      level=level, seed=seed, n_jobs=n_jobs, heldout=False)
    if fit.law.name != "decoupled":
        raise CapscaleError("data independence is measured with a decoupled fit")
    ids, labels = tokens_per_param_groups(df, rel_tol)
    keys = rep.representation_keys(df, key_columns)
    dense = rep.dense_rows(df)
    settings = fit.info["settings"]
    delta = settings["huber_delta"]
    shared = fit.law.to_natural(fit.theta)[None, :5]
    samples = (fit.law.to_natural(fit.samples)[:, :5] if fit.samples is not None
               else np.empty((0, 5)))
    rng = np.random.default_rng(seed)
    rows = []
    for key, g in sorted({(k, g) for k, d, g in zip(keys, dense, ids) if not d},
                         key=lambda kg: (keys.index(kg[0]), kg[1])):
        mask = np.array([(k == key) and (i == g) for k, i in zip(keys, ids)])
        sub = df[mask]
        N, D, y = (sub[c].to_numpy(float) for c in ("N", "D", "loss"))
        point = _eff_huber(shared, N, D, y, np.ones((1, len(y))), delta)[0]
        lo = hi = math.nan
        if len(samples):
            draws = rng.integers(0, len(y), size=(len(samples), len(y)))
            w = np.zeros((len(samples), len(y)))
            np.add.at(w, (np.repeat(np.arange(len(samples)), len(y)), draws.ravel()), 1.0)
            effs = _eff_huber(samples, N, D, y, w, delta)
            q = 100 * (1 - level) / 2
            lo, hi = np.percentile(effs, [q, 100 - q])
        rows.append({"format": key, "tokens_per_param": labels[g], "n_runs": int(mask.sum()),
                     "eff": point, "eff_lo": lo, "eff_hi": hi})
    table = pd.DataFrame(rows)
    if table.empty:
        raise CapscaleError("data independence needs compressed runs; the table has only dense ones")
    agree = {}
    for key, grp in table.groupby("format", sort=False):
        if len(grp) < 2 or not np.isfinite(grp["eff_lo"]).all():
            agree[key] = None
            continue
        agree[key] = bool(grp["eff_lo"].max() <= grp["eff_hi"].min())
    table["n_ratios"] = table["format"].map(table.groupby("format").size())
    table["agree"] = table["format"].map(agree)
    table.attrs["fit"] = fit
    return table


def _eff_huber(shared: np.ndarray, N, D, y, w, delta: float) -> np.ndarray:
    """argmin over eff of Σ w·huber(log L̂(N, D; eff) − log L), for each row of ``shared``
    ([A, α, B, β, E]) with the matching row of weights, by nested grid search in log eff
    (robust for a 1-D problem that need not be convex, and vectorised over rows)."""
    A, a, B, b, E = (shared[:, i:i + 1, None] for i in range(5))
    logN, rest = np.log(N)[None, None, :], None
    rest = np.log(B * D[None, None, :] ** -b + E)
    logy = np.log(y)[None, None, :]
    w = np.asarray(w, float)[:, None, :]
    center = np.zeros((shared.shape[0], 1))
    half = 6.0
    for _ in range(6):
        u = center + np.linspace(-half, half, 61)[None, :]  # log eff candidates
        t1 = np.log(A) - a * (logN + u[:, :, None])
        r = np.logaddexp(t1, rest) - logy
        psi = np.clip(r, -delta, delta)
        f = (w * psi * (r - 0.5 * psi)).sum(2)
        center = u[np.arange(len(u)), np.argmin(f, axis=1)][:, None]
        half /= 10.0
    return np.exp(center[:, 0])


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
    floats = ["eff", "marginal_x", "marginal_y", "product", "abs_error"]
    table[floats] = table[floats].astype(np.float64)
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
