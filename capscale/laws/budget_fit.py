"""The decoupled law at the one token budget a study's compressed runs share.

At a fixed budget D*, the decoupled law L = E + A·(ρN)^(−α) + B·D^(−β) reduces to
L = E* + A·(ρN)^(−α) with E* = E + B·D*^(−β): ρ is read off the dense runs' loss-against-N curve
at that budget alone. Fitting the whole law instead makes ρ depend on the law holding across
budgets; on small models whose N-slope changes with D (short runs still in their transient) the
additive law fits an average slope that matches no budget, and ρ = (loss gap)^(1/α) inherits
that error. The budget slice needs nothing but dense runs at three or more sizes at D*.

Intervals come from a residual bootstrap: the runs keep their sizes (so the curve stays
identified in every resample) and each resample adds residuals to the fitted losses, drawn with
replacement within each run's group (the dense runs, or one representation's runs) and
inflated for the degrees of freedom the fit used.
"""

from __future__ import annotations

import math
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
    at_bound: list[str] = field(default_factory=list)

    def interval(self, key: str, level: float = 0.95) -> tuple[float, float]:
        d = self.draws.get(key)
        if d is None or d.size < 2 or not np.all(np.isfinite(d)):
            return math.nan, math.nan
        a = (1 - level) / 2
        lo, hi = np.quantile(d, [a, 1 - a])
        return float(lo), float(hi)


ALPHA_GRID = np.geomspace(0.01, 3.0, 1200)  # steps of 0.5% in α


def _design(alpha: float, x: np.ndarray, k: np.ndarray, n_keys: int) -> np.ndarray:
    """Columns [1], then exp(−α·x) masked to the dense runs and to each key's runs: for fixed
    α the law E + A·N^(−α) (dense) and E + A·ρ_k^(−α)·N^(−α) (key k) is linear in
    (E, A, c_k = A·ρ_k^(−α))."""
    z = np.exp(-alpha * (x - x.mean()))  # centred: the same fit, better conditioned
    cols = [np.ones_like(z), np.where(k < 0, z, 0.0)]
    cols += [np.where(k == i, z, 0.0) for i in range(n_keys)]
    return np.column_stack(cols)


def _at_alpha(alpha: float, x: np.ndarray, k: np.ndarray, n_keys: int, Y: np.ndarray):
    """Least squares of every column of ``Y`` for one α, with E ≥ 0: (coef, rss), coef rows
    E, A, c_1…c_K (A and c_k for the centred sizes)."""
    M = _design(alpha, x, k, n_keys)
    coef = np.linalg.pinv(M) @ Y
    neg = coef[0] < 0
    if neg.any():  # the loss floor cannot be negative: refit those with E = 0
        coef0 = np.linalg.pinv(M[:, 1:]) @ Y[:, neg]
        coef[:, neg] = np.vstack([np.zeros(int(neg.sum())), coef0])
    return coef, np.sum((Y - M @ coef) ** 2, axis=0)


def _fit_many(x: np.ndarray, k: np.ndarray, n_keys: int, Y: np.ndarray):
    """Least squares of the budget law to each column of ``Y`` (n runs × m loss vectors),
    profiling α over :data:`ALPHA_GRID` (E, A and the c_k are linear given α). Returns
    (alpha, coef (rows E, A, c_k), rss) per column; α NaN where no α gives A > 0."""
    m = Y.shape[1]
    best_rss = np.full(m, np.inf)
    alpha_best = np.full(m, np.nan)
    coef_best = np.full((2 + n_keys, m), np.nan)
    for alpha in ALPHA_GRID:
        coef, rss = _at_alpha(alpha, x, k, n_keys, Y)
        better = (rss < best_rss) & (coef[1] > 0)
        best_rss[better] = rss[better]
        alpha_best[better] = alpha
        coef_best[:, better] = coef[:, better]
    return alpha_best, coef_best, best_rss


def _refine(alpha0: float, x, k, n_keys, y) -> tuple[float, np.ndarray]:
    """The point estimate's α between the grid neighbours of the best grid value."""
    i = int(np.argmin(np.abs(ALPHA_GRID - alpha0)))
    lo, hi = ALPHA_GRID[max(i - 1, 0)], ALPHA_GRID[min(i + 1, ALPHA_GRID.size - 1)]

    def rss(a):
        coef, r = _at_alpha(a, x, k, n_keys, y[:, None])
        return float(r[0]) if coef[1, 0] > 0 else np.inf

    a = float(minimize_scalar(rss, bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6 * alpha0}).x)
    if rss(a) > rss(alpha0):
        a = alpha0
    return a, _at_alpha(a, x, k, n_keys, y[:, None])[0][:, 0]


def _rho(alpha, A, c) -> np.ndarray:
    """ρ_k = (c_k / A)^(−1/α), clipped to the bounds; NaN where c_k ≤ 0 (a key whose loss
    lies below the curve's floor)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = -np.log(c / A) / alpha
    u = np.where(c > 0, np.clip(u, *LOG_RHO_BOUNDS), np.nan)
    return np.exp(u)


def rho_columns(N, key_index, n_keys: int, Y: np.ndarray) -> np.ndarray:
    """ρ per key (rows) fitted to each column of ``Y`` (losses of the runs at sizes ``N``, one
    simulated or resampled experiment per column): the design check's and the bootstrap's
    refit, at the grid's resolution of α."""
    x = np.log(np.asarray(N, float))
    alpha, coef, _ = _fit_many(x, np.asarray(key_index, int), n_keys, np.asarray(Y, float))
    return _rho(alpha[None, :], coef[1][None, :], coef[2:])


def _resampled_residuals(resid: np.ndarray, k: np.ndarray, rng, n_bootstrap: int,
                         dof: int) -> np.ndarray:
    """Residuals for each resample, drawn within each run's own group (the dense runs, or one
    key's runs) so that a noisy or misfitting format does not widen the others' intervals;
    scaled by √(n_g/(n_g − p_g)) for the parameters the group's fit used (3 for the dense
    curve, 1 per key). A group too small for that draws from all runs' residuals."""
    pooled = resid * math.sqrt(resid.size / dof)
    out = np.empty((resid.size, n_bootstrap))
    for g in np.unique(k):
        sel = np.flatnonzero(k == g)
        used = 3 if g < 0 else 1
        pool = (resid[sel] * math.sqrt(sel.size / (sel.size - used)) if sel.size > used
                else pooled)
        out[sel] = rng.choice(pool, size=(sel.size, n_bootstrap), replace=True)
    return out


def fit_at_budget(N, loss, key_index, keys: list[str], reference_keys: list[str], budget: float,
                  *, n_bootstrap: int = 400, seed: int = 0) -> BudgetFit:
    """Fit E*, A, α and ρ per key to runs at one budget; ``key_index`` is −1 for dense runs
    and the index into ``keys`` for compressed ones."""
    x = np.log(np.asarray(N, float))
    y = np.asarray(loss, float)
    k = np.asarray(key_index, int)
    dense = k < 0
    n_sizes = len(set(x[dense]))
    if n_sizes < 3:
        raise CapscaleError(f"ρ at the budget of {budget:,.0f} tokens needs dense runs at 3 or "
                            f"more sizes there; found {n_sizes}")
    n_keys = len(keys)
    rising = np.polyfit(x[dense], y[dense], 1)[0] >= 0
    alpha_grid = np.full(1, np.nan) if rising else _fit_many(x, k, n_keys, y[:, None])[0]
    if not np.isfinite(alpha_grid[0]):
        raise CapscaleError("the dense runs' loss does not fall with N at the compressed runs' "
                            f"budget ({budget:,.0f} tokens): no ρ can be read off them")
    alpha, coef = _refine(float(alpha_grid[0]), x, k, n_keys, y)
    E, A, c = coef[0], coef[1], coef[2:]
    fitted = _design(alpha, x, k, n_keys) @ coef
    resid = y - fitted
    n, p = y.size, 3 + n_keys
    dof = n - p
    rho = _rho(alpha, A, c)
    u = np.log(rho)
    fit = BudgetFit(budget=float(budget), keys=list(keys), reference_keys=list(reference_keys),
                    E=float(E), A=float(A * math.exp(alpha * x.mean())), alpha=float(alpha),
                    rho={key: float(rho[i]) for i, key in enumerate(keys)},
                    residual_sd=float(np.sqrt(np.sum(resid ** 2) / dof)) if dof > 0 else math.nan,
                    n_runs=int(n),
                    at_bound=[key for i, key in enumerate(keys)
                              if not np.isfinite(u[i]) or min(abs(u[i] - b) for b in
                                                              LOG_RHO_BOUNDS) < 1e-9])
    if n_bootstrap and dof > 0:
        rng = np.random.default_rng(seed)
        Y = fitted[:, None] + _resampled_residuals(resid, k, rng, n_bootstrap, dof)
        draws = rho_columns(np.exp(x), k, n_keys, Y)
        fit.draws = {key: draws[i] for i, key in enumerate(keys)}
    return fit
