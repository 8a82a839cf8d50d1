"""The decoupled law at the one token budget a study's compressed runs share.

At a fixed budget D*, the decoupled law L = E + A·(ρN)^(−α) + B·D^(−β) reduces to
L = E* + A·(ρN)^(−α) with E* = E + B·D*^(−β): ρ is read off the dense runs' loss-against-N curve
at that budget alone. Fitting the whole law instead makes ρ depend on the law holding across
budgets; on small models whose N-slope changes with D (short runs still in their transient) the
additive law fits an average slope that matches no budget, and ρ = (loss gap)^(1/α) inherits
that error. The budget slice needs nothing but dense runs at three or more sizes at D*.

The curve (E*, A, α) is fitted to the dense runs alone; each representation's runs then set
only their own level c_k = A·ρ_k^(−α) on that curve (least squares, closed form). So a
representation whose loss does not follow the law's shape (LSQ at CPU scale falls far less
with N than the dense runs) cannot bend the curve and move every other ρ, and the same runs
give the same ρ in every study that shares the dense ladder.

Intervals come from a residual bootstrap: the runs keep their sizes (so the curve stays
identified in every resample) and each resample adds residuals to the fitted losses, drawn with
replacement within each run's group (the dense runs, or one representation's runs) and
inflated for the degrees of freedom the fit used. Each resample refits the curve and every
level, so the draws of all ρ are joint: ratios of capacities take their intervals from them.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize_scalar

from capscale.errors import CapscaleError

LOG_RHO_BOUNDS = (-12.0, 4.0)  # ρ between 6e-6 and 55: beyond, the fit says "at the bound"


@dataclass
class BudgetFit:
    """ρ per representation key at one budget, its bootstrap draws, and the dense curve."""

    budget: float
    keys: list[str]  # compressed representation keys, in fit order
    reference_keys: list[str]  # the dense key(s): ρ = 1 by definition
    E: float
    A: float
    alpha: float
    rho: dict[str, float]
    draws: dict[str, np.ndarray] = field(default_factory=dict)  # joint bootstrap draws of ρ
    residual_sd: float = math.nan
    n_runs: int = 0
    n_dense: int = 0  # the runs the curve is fitted to
    at_bound: list[str] = field(default_factory=list)

    def interval(self, key: str, level: float = 0.95) -> tuple[float, float]:
        d = self.draws.get(key)
        if d is None or d.size < 2 or not np.all(np.isfinite(d)):
            return math.nan, math.nan
        a = (1 - level) / 2
        lo, hi = np.quantile(d, [a, 1 - a])
        return float(lo), float(hi)


ALPHA_GRID = np.geomspace(0.01, 3.0, 1200)  # steps of 0.5% in α


def _curve_at(alpha: float, x: np.ndarray, Y: np.ndarray):
    """Least squares of E + A·exp(−α·x) to every column of ``Y`` for one α, with E ≥ 0:
    (coef rows E, A; rss). ``x`` is log N centred on the dense runs' mean (better conditioned;
    A is then the loss above the floor at the mean size)."""
    M = np.column_stack([np.ones_like(x), np.exp(-alpha * x)])
    coef = np.linalg.pinv(M) @ Y
    neg = coef[0] < 0
    if neg.any():  # the loss floor cannot be negative: refit those with E = 0
        z = M[:, 1]
        coef[:, neg] = np.vstack([np.zeros(int(neg.sum())), z @ Y[:, neg] / (z @ z)])
    return coef, np.sum((Y - M @ coef) ** 2, axis=0)


def _fit_curves(x: np.ndarray, Y: np.ndarray):
    """The dense curve fitted to each column of ``Y`` (dense runs × m loss vectors), profiling
    α over :data:`ALPHA_GRID` (E and A are linear given α): (alpha, coef rows E, A) per column,
    α NaN where no α gives A > 0."""
    m = Y.shape[1]
    best_rss = np.full(m, np.inf)
    alpha_best = np.full(m, np.nan)
    coef_best = np.full((2, m), np.nan)
    for alpha in ALPHA_GRID:
        coef, rss = _curve_at(alpha, x, Y)
        better = (rss < best_rss) & (coef[1] > 0)
        best_rss[better] = rss[better]
        alpha_best[better] = alpha
        coef_best[:, better] = coef[:, better]
    return alpha_best, coef_best


def _refine(alpha0: float, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The point estimate's α between the grid neighbours of the best grid value."""
    i = int(np.argmin(np.abs(ALPHA_GRID - alpha0)))
    lo, hi = ALPHA_GRID[max(i - 1, 0)], ALPHA_GRID[min(i + 1, ALPHA_GRID.size - 1)]

    def rss(a):
        coef, r = _curve_at(a, x, y[:, None])
        return float(r[0]) if coef[1, 0] > 0 else np.inf

    a = float(minimize_scalar(rss, bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6 * alpha0}).x)
    if rss(a) > rss(alpha0):
        a = alpha0
    return a, _curve_at(a, x, y[:, None])[0][:, 0]


def _levels(alpha, E, x: np.ndarray, k: np.ndarray, n_keys: int, Y: np.ndarray) -> np.ndarray:
    """c_k = A·ρ_k^(−α) per key (rows) and column: the least-squares level of each key's runs
    on the curve of that column's α and E (closed form: Σz(y−E) / Σz², z = exp(−α·x))."""
    out = np.empty((n_keys, Y.shape[1]))
    for i in range(n_keys):
        sel = k == i
        z = np.exp(-np.outer(x[sel], alpha))
        out[i] = np.sum(z * (Y[sel] - E), axis=0) / np.sum(z * z, axis=0)
    return out


def _rho(alpha, A, c) -> np.ndarray:
    """ρ_k = (c_k / A)^(−1/α), clipped to the bounds; NaN where c_k ≤ 0 (a key whose loss
    lies below the curve's floor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = -np.log(c / A) / alpha
    u = np.where(c > 0, np.clip(u, *LOG_RHO_BOUNDS), np.nan)
    return np.exp(u)


def _centred(N, key_index) -> tuple[np.ndarray, np.ndarray, float]:
    """log N centred on the dense runs' mean, the key index as an array, and that mean."""
    x = np.log(np.asarray(N, float))
    k = np.asarray(key_index, int)
    centre = float(x[k < 0].mean())
    return x - centre, k, centre


def rho_columns(N, key_index, n_keys: int, Y: np.ndarray) -> np.ndarray:
    """ρ per key (rows) fitted to each column of ``Y`` (losses of the runs at sizes ``N``, one
    simulated or resampled experiment per column): the design check's and the bootstrap's
    refit, at the grid's resolution of α."""
    x, k, _ = _centred(N, key_index)
    Y = np.asarray(Y, float)
    dense = k < 0
    alpha, coef = _fit_curves(x[dense], Y[dense])
    return _rho(alpha[None, :], coef[1][None, :], _levels(alpha, coef[0], x, k, n_keys, Y))


def _resampled_residuals(resid: np.ndarray, k: np.ndarray, groups: dict[int, str], seed: int,
                         n_bootstrap: int) -> np.ndarray:
    """Residuals for each resample, drawn within each run's own group (the dense runs, or one
    key's runs) so that a noisy or misfitting format does not widen the others' intervals;
    scaled by √(n_g/(n_g − p_g)) for the parameters the group's fit used (3 for the dense
    curve, 1 per key). Each group draws from its own random stream, named by the group, so a
    format's draws do not change when another format joins the fit. A group too small to
    have residuals of its own (three dense sizes, one run of a format) draws normal noise at
    the median of the other groups' scatter: one format off the law cannot set it."""
    out = np.empty((resid.size, n_bootstrap))
    pools, small = {}, []
    for g in np.unique(k):
        sel = np.flatnonzero(k == g)
        used = 3 if g < 0 else 1
        if sel.size > used:
            pools[g] = (sel, resid[sel] * math.sqrt(sel.size / (sel.size - used)))
        else:
            small.append((g, sel))
    sds = [math.sqrt(np.mean(pool ** 2)) for _, pool in pools.values()]
    fallback = float(np.median(sds)) if sds else 0.0
    for g, (sel, pool) in pools.items():
        out[sel] = _stream(seed, groups[g]).choice(pool, size=(sel.size, n_bootstrap))
    for g, sel in small:
        out[sel] = _stream(seed, groups[g]).normal(0.0, fallback, size=(sel.size, n_bootstrap))
    return out


def _stream(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def fit_at_budget(N, loss, key_index, keys: list[str], reference_keys: list[str], budget: float,
                  *, n_bootstrap: int = 400, seed: int = 0) -> BudgetFit:
    """Fit E*, A and α to the dense runs at one budget and ρ per key on that curve;
    ``key_index`` is −1 for dense runs and the index into ``keys`` for compressed ones."""
    k = np.asarray(key_index, int)
    dense = k < 0
    n_sizes = len(set(np.asarray(N, float)[dense]))
    if n_sizes < 3:
        raise CapscaleError(f"ρ at the budget of {budget:,.0f} tokens needs dense runs at 3 or "
                            f"more sizes there; found {n_sizes}")
    x, k, centre = _centred(N, key_index)
    y = np.asarray(loss, float)
    n_keys = len(keys)
    rising = np.polyfit(x[dense], y[dense], 1)[0] >= 0
    alpha_grid = np.full(1, np.nan) if rising else _fit_curves(x[dense], y[dense, None])[0]
    if not np.isfinite(alpha_grid[0]):
        raise CapscaleError("the dense runs' loss does not fall with N at the compressed runs' "
                            f"budget ({budget:,.0f} tokens): no ρ can be read off them")
    alpha, (E, A) = _refine(float(alpha_grid[0]), x[dense], y[dense])
    c = _levels(np.array([alpha]), E, x, k, n_keys, y[:, None])[:, 0]
    fitted = E + np.exp(-alpha * x) * np.where(dense, A, c[np.maximum(k, 0)] if n_keys else A)
    resid = y - fitted
    n, p = y.size, 3 + n_keys
    dof = n - p
    rho = _rho(alpha, A, c)
    u = np.log(rho)
    fit = BudgetFit(budget=float(budget), keys=list(keys), reference_keys=list(reference_keys),
                    E=float(E), A=float(A * math.exp(alpha * centre)), alpha=float(alpha),
                    rho={key: float(rho[i]) for i, key in enumerate(keys)},
                    residual_sd=float(np.sqrt(np.sum(resid ** 2) / dof)) if dof > 0 else math.nan,
                    n_runs=int(n), n_dense=int(dense.sum()),
                    at_bound=[key for i, key in enumerate(keys)
                              if not np.isfinite(u[i]) or min(abs(u[i] - b) for b in
                                                              LOG_RHO_BOUNDS) < 1e-9])
    if n_bootstrap and dof > 0:
        groups = {-1: "dense", **dict(enumerate(keys))}
        Y = fitted[:, None] + _resampled_residuals(resid, k, groups, seed, n_bootstrap)
        draws = rho_columns(np.asarray(N, float), k, n_keys, Y)
        fit.draws = {key: draws[i] for i, key in enumerate(keys)}
    return fit
