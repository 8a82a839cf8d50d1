"""Exact GMSE of magnitude masks (sparsity, N:M, outliers), alone or followed by an RMS-scaled
grid, by one-dimensional integration instead of Monte Carlo.

A magnitude mask keeps the k largest of n units (values, or pairs ranked by their L2 norm).
For i.i.d. N(0, 1) data, a value x is kept exactly when at most k − 1 of the other n − 1 units
score above it, so its probability of being kept given x is a binomial tail,

    w(x) = P(Bin(n − 1, q(x)) ≤ k − 1),    q(x) = P(|X| > |x|) = 2Φ(−|x|),

exact at any n (the finite-row value, not only its limit). For pairs the unit's score is
x² + y² with y the partner, P(x² + y² > s) = e^(−s/2), and averaging w over y gives a closed
form (E e^(−r·y²/2) = (1 + r)^(−1/2)). A pruned value costs x², an outlier 0 (it is kept
exactly), and a value left to the grid (Q_s(x) − x)², so

    GMSE = ∫ φ(x)·[w_pruned(x)·x² + w_grid(x)·(Q_s(x) − x)²] dx,

done by Gauss–Legendre quadrature on pieces between the grid's cell edges, refined where the
weights step (around the k-th largest |x|).

The grid's scale is α*·RMS of the entries left to it. Its value here is the long-row limit,
s = α*·(E[x²·w_grid] / E[w_grid])^(1/2), as for the plain RMS-scaled grids (`grid_gmse`); at
finite rows the measured RMS fluctuates by O(n^(−1/2)) and moves the GMSE by O(1/n) relative
(within 2e-4 at rows of 4096, inside a 2e-4 Monte Carlo's error; the tests compare both).
Below MIN_GRID_ENTRIES entries per scale the limit is not used (None: Monte Carlo). Without a
grid (a mask alone) the value is exact at the given shape.

A Hadamard rotation (`:had`) maps i.i.d. Gaussian rows to i.i.d. Gaussian rows and is
orthonormal, so a rotated pipeline has the GMSE of the unrotated one.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import bdtr, ndtr, ndtri

from capscale.formats.base import Format
from capscale.formats.scalar import ScalarQuantizer
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers

MIN_GRID_ENTRIES = 1024  # the long-row limit of a grid's RMS scale, only from this many entries per scale
X_MAX = 9.0  # φ(9) ≈ 1e-18: nothing beyond matters
GL_NODES = 16


@lru_cache(maxsize=4)
def _gauss_legendre(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(k)


def _nodes(breaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, w = _gauss_legendre(GL_NODES)
    b = np.unique(breaks)
    lo, hi = b[:-1, None], b[1:, None]
    half = (hi - lo) / 2
    return (lo + half * (x + 1)).ravel(), (half * w).ravel()


def _pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class _TopK:
    """The probability that a value x is among the k largest |·| of n units (units of one
    value, or pairs ranked by L2 norm)."""

    def __init__(self, n: int, k: int, pairs: bool = False):
        self.n, self.k, self.pairs = n, k, pairs

    def __call__(self, x: np.ndarray) -> np.ndarray:
        n, k = self.n, self.k
        if k <= 0:
            return np.zeros_like(x)
        if k >= n:
            return np.ones_like(x)
        if not self.pairs:
            # the binomial tail only where it is neither 0 nor 1 to float64 (large n is costly)
            t, width = self._step()
            out = (np.abs(x) > t).astype(np.float64)
            near = np.abs(np.abs(x) - t) < 40 * width
            out[near] = bdtr(k - 1, n - 1, 2.0 * ndtr(-np.abs(x[near])))
            return out
        # w(s) = Σ_{j<k} C(n−1, j) p^j (1 − p)^(n−1−j), p = e^(−s/2): a polynomial Σ c_r p^r,
        # and E_y p^r = e^(−r·x²/2)·(1 + r)^(−1/2)
        c = np.zeros(n)
        for j in range(k):
            for i in range(n - j):  # (1 − p)^(n−1−j) = Σ_i C(n−1−j, i)(−p)^i
                c[j + i] += math.comb(n - 1, j) * math.comb(n - 1 - j, i) * (-1) ** i
        r = np.arange(n)
        return np.exp(-0.5 * np.outer(x * x, r)) @ (c / np.sqrt(1.0 + r))

    def _step(self) -> tuple[float, float]:
        """Where w steps (the k-th largest |x| in the limit) and the step's width in x (one
        binomial standard deviation of the fraction kept)."""
        u0 = self.k / self.n  # the fraction kept
        if self.pairs:  # P(x² + y² > s) = e^(−s/2): a kept pair has s ≳ −2 log u0
            t = math.sqrt(-2.0 * math.log(u0))
            return t, math.sqrt(u0 * (1 - u0) / self.n) / (u0 * t) + 0.05
        t = float(-ndtri(u0 / 2))
        return t, math.sqrt(u0 * (1 - u0) / self.n) / (2 * float(_pdf(np.array(t))))

    def steps(self) -> np.ndarray:
        """Break points that resolve the step of w around the k-th largest |x|."""
        if self.k <= 0 or self.k >= self.n:
            return np.zeros(0)
        t, width = self._step()
        pts = t + width * np.linspace(-12.0, 12.0, 49)
        return np.concatenate([pts, -pts])


def _mask_weights(part, rows: int, cols: int):
    """(kind, weight) for a mask part: kind "keep" (sparsity) or "outlier"; None if not a
    mask this module integrates at this shape."""
    if isinstance(part, MagnitudeSparsity):
        n = cols if part.per_row else rows * cols
        return "keep", _TopK(n, n - round(n * part.sparsity))
    if isinstance(part, Outliers):
        n = cols if part.per_row else rows * cols
        return "outlier", _TopK(n, round(n * part.fraction))
    if isinstance(part, NMSparsity):
        if cols % (part.m * part.unit):
            return None
        return "keep", _TopK(part.m, part.n, part.pairs)
    return None


def exact_mask_gmse(fmt: Format, shape: tuple[int, int]) -> float | None:
    """The GMSE of `mask` or `mask+grid` (grid: a scalar quantizer scaled by the RMS of its row
    or tensor), rotated or not, on a (rows, cols) Gaussian tensor; None for other formats."""
    parts = fmt.parts
    if not 1 <= len(parts) <= 2:
        return None
    rows, cols = shape
    mask = _mask_weights(parts[0], rows, cols)
    if mask is None:
        return None
    kind, topk = mask
    grid = None
    if len(parts) == 2:
        grid = parts[1]
        if not (isinstance(grid, ScalarQuantizer) and grid.scaling.rule == "rms"
                and grid.scaling.group in ("row", "tensor")):
            return None
        left = topk.k / topk.n if kind == "keep" else 1 - topk.k / topk.n
        if left * (cols if grid.scaling.group == "row" else rows * cols) < MIN_GRID_ENTRIES:
            return None
    if kind == "outlier" and grid is None:
        return 0.0  # outliers kept exactly, the rest stored uncompressed

    breaks = [np.linspace(-X_MAX, X_MAX, 181), topk.steps()]
    x, w = _nodes(np.clip(np.concatenate(breaks), -X_MAX, X_MAX))
    dens = w * _pdf(x)
    k = topk(x)
    w_pruned = 1.0 - k if kind == "keep" else np.zeros_like(k)
    w_grid = k if kind == "keep" else 1.0 - k
    total = float(np.sum(dens * w_pruned * x * x))
    if grid is None:
        return total
    # the long-row limit of the grid's RMS scale, then the grid's error with its cell edges
    # among the break points
    mass = float(np.sum(dens * w_grid))
    if mass <= 0:
        return total
    s = grid.alpha * math.sqrt(float(np.sum(dens * w_grid * x * x)) / mass)
    values = np.sort(np.asarray(grid.levels, dtype=np.float64)) * s
    edges = (values[1:] + values[:-1]) / 2
    x, w = _nodes(np.clip(np.concatenate([*breaks, edges]), -X_MAX, X_MAX))
    dens = w * _pdf(x)
    k = topk(x)
    w_pruned = 1.0 - k if kind == "keep" else np.zeros_like(k)
    w_grid = k if kind == "keep" else 1.0 - k
    q = values[np.searchsorted(edges, x)]
    return float(np.sum(dens * (w_pruned * x * x + w_grid * (q - x) ** 2)))
