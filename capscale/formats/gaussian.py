"""Exact Gaussian MSE of scalar grids, by integration over the cells of the grid.

For a grid with levels q_k (sorted) at scale s, nearest rounding makes cells between the
midpoints of adjacent levels; the outermost cells extend to ±∞ (saturation). With the
partial moments of N(0, 1) over [a, b]:
    m0 = Φ(b) − Φ(a),  m1 = φ(a) − φ(b),  m2 = m0 + aφ(a) − bφ(b),
the MSE of the cell whose value is c = s·q_k is m2 − 2c·m1 + c²·m0. Summing the cells gives
the GMSE exactly (to float64 round-off), which is what published values are checked against.
It lives with the formats because it defines them: the RMS scale rule places a grid at the
α* found here, and the Lloyd–Max grids are its fixed points.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.special import ndtr

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def _pdf(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        out = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    return np.where(np.isfinite(x), out, 0.0)


def _x_pdf(x: np.ndarray) -> np.ndarray:
    """x·φ(x), taken as 0 at ±∞."""
    finite = np.isfinite(x)
    safe = np.where(finite, x, 0.0)
    return np.where(finite, safe * _pdf(safe), 0.0)


def gaussian_cell_moments(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial moments ∫ x^k φ(x) dx, k = 0, 1, 2, over the cells [edges[i], edges[i+1]]."""
    return gaussian_interval_moments(edges[:-1], edges[1:])


def gaussian_interval_moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Partial moments ∫_a^b x^k φ(x) dx, k = 0, 1, 2, elementwise over arrays of intervals."""
    m0 = ndtr(b) - ndtr(a)
    m1 = _pdf(a) - _pdf(b)
    m2 = m0 + _x_pdf(a) - _x_pdf(b)
    return m0, m1, m2


def grid_gmse(levels: np.ndarray, scale: float = 1.0) -> float:
    """E(Q(x) − x)² for x ~ N(0, 1), Q rounding to the nearest of `scale · levels`."""
    values = np.sort(np.asarray(levels, dtype=np.float64)) * scale
    edges = np.concatenate([[-np.inf], (values[1:] + values[:-1]) / 2, [np.inf]])
    m0, m1, m2 = gaussian_cell_moments(edges)
    return float(np.sum(m2 - 2 * values * m1 + values**2 * m0))


def _grid_gmse_at_scales(levels: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """grid_gmse(levels, s) for each s of `scales` at once: the same arithmetic, with Φ and φ
    evaluated once per cell edge."""
    values = scales[:, None] * levels[None, :]
    inf = np.full((len(scales), 1), np.inf)
    edges = np.concatenate([-inf, (values[:, 1:] + values[:, :-1]) / 2, inf], axis=1)
    cdf, pdf, x_pdf = ndtr(edges), _pdf(edges), _x_pdf(edges)
    m0 = cdf[:, 1:] - cdf[:, :-1]
    m1 = pdf[:, :-1] - pdf[:, 1:]
    m2 = m0 + x_pdf[:, :-1] - x_pdf[:, 1:]
    return np.sum(m2 - 2 * values * m1 + values**2 * m0, axis=1)


def _solve_optimal_scale(levels: np.ndarray) -> tuple[float, float]:
    from scipy.optimize import minimize_scalar

    # coarse scan, then Brent's method in the bracket around the best point
    grid = np.linspace(0.05, 8.0, 800)
    i = int(np.argmin(_grid_gmse_at_scales(levels, grid)))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(
        lambda s: grid_gmse(levels, s), bounds=(lo, hi), method="bounded",
        options={"xatol": 1e-13, "maxiter": 500},
    )
    return float(res.x), float(res.fun)


SCALE_CACHE_VERSION = 1


@lru_cache(maxsize=256)
def _optimal_scale_cached(levels_key: tuple[float, ...]) -> tuple[float, float]:
    """The solve, kept in memory and in the capscale cache (``scales/``, one small JSON file
    per grid, named by a hash of its float64 levels), so that a new process reads α* instead
    of solving for it (and importing scipy.optimize)."""
    levels = np.array(levels_key, dtype=np.float64)
    path = _scale_cache_path(levels)
    try:
        data = json.loads(path.read_text())
        if data["version"] == SCALE_CACHE_VERSION and data["levels"] == list(levels_key):
            return float(data["scale"]), float(data["gmse"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # missing or damaged: solve again
    scale, value = _solve_optimal_scale(levels)
    record = {"version": SCALE_CACHE_VERSION, "levels": list(levels_key), "scale": scale, "gmse": value}
    # written beside, then renamed: readers see no file or a whole one (a file cut short by a
    # crash reads as damaged and is solved again, so it is not worth an fsync)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except OSError:  # an unwritable cache costs the solve next time, nothing else
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return scale, value


def _scale_cache_path(levels: np.ndarray) -> Path:
    from capscale.cache import cache_root

    return cache_root() / "scales" / f"grid-{hashlib.sha256(levels.tobytes()).hexdigest()[:20]}.json"


def optimal_scale(levels: np.ndarray) -> tuple[float, float]:
    """The scale s* minimising grid_gmse(levels, s) for a grid normalised to max |level| = 1,
    with the GMSE it reaches. s* is the outermost level in units of σ (α* for INT grids)."""
    key = tuple(float(v) for v in np.asarray(levels, dtype=np.float64))
    return _optimal_scale_cached(key)
