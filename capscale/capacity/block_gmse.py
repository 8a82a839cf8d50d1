"""Exact GMSE of block-scaled formats (MX, NVFP4, NF4, absmax-scaled grids), by integration
over the block maximum instead of Monte Carlo.

A block of n i.i.d. N(0, 1) values has its shared scale set by its absolute maximum M, whose
density is f_M(m) = 2n·φ(m)·(2Φ(m) − 1)^(n−1). Given M = m, the maximal entry is ±m (each
sign with probability 1/2) and the other n − 1 are i.i.d. N(0, 1) truncated to (−m, m). So the
expected squared error of a block with maximum m is

    h(m) = ½[(Q_m(m) − m)² + (Q_m(−m) + m)²] + (n − 1)·I(m) / (2Φ(m) − 1),
    I(m) = ∫_{−m}^{m} (Q_m(x) − x)² φ(x) dx,

with Q_m the grid at the scale m sets; I(m) is a sum over the grid's cells clipped to (−m, m)
of Gaussian partial moments (as for a plain grid, `capscale.formats.gaussian`). GMSE =
E[h(M)] / n, a one-dimensional integral done by Gauss–Legendre quadrature on the pieces where
h is smooth (the scale is piecewise constant for MX and NVFP4, and Q_m(±m) jumps where ±m
crosses a cell edge), to float64 round-off.

NVFP4 adds a tensor scale g = amax_tensor / 2688 that places the E4M3 block-scale grid; the
tensor maximum T of N = rows·cols values has density 2N·φ(t)(2Φ(t) − 1)^(N−1). Given T = t one
block has maximum t and the other B − 1 blocks have maxima conditioned below t, so
GMSE = E_T[(B − 1)·E[h_g(M) | M ≤ T] + h_g(T)] / N, a second quadrature over t. The FP32
rounding of g (a relative 6e-8) is neglected.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.special import erf, ndtr, ndtri

from capscale.formats.base import Part
from capscale.formats.block import E2M1, E4M3, MX_ELEMENTS, MXQuantizer, NVFP4Quantizer
from capscale.formats.gaussian import gaussian_interval_moments
from capscale.formats.grids import fp_levels
from capscale.formats.scalar import ScalarQuantizer

GL_NODES = 12  # Gauss–Legendre nodes per smooth piece


def _log_two_phi_minus_one(m: np.ndarray) -> np.ndarray:
    """log(2Φ(m) − 1) = log(1 − 2Φ(−m)), accurate in both tails."""
    m = np.asarray(m, dtype=np.float64)
    small = m < 1.0
    out = np.empty_like(m)
    out[~small] = np.log1p(-2.0 * ndtr(-m[~small]))
    # erf(m/√2) for small m, without cancellation
    out[small] = np.log(np.maximum(erf(m[small] / math.sqrt(2.0)), 1e-300))
    return out


def _log_max_density(m: np.ndarray, n: int) -> np.ndarray:
    """log f_M(m), f_M the density of the maximum of n i.i.d. |N(0, 1)|."""
    return math.log(2.0 * n) - 0.5 * m * m - 0.5 * math.log(2 * math.pi) + (n - 1) * _log_two_phi_minus_one(m)


def _max_quantile(u: float, n: int, upper: bool = False) -> float:
    """The m with P(max of n |N(0,1)| ≤ m) = u (with `upper`: P(max > m) = u)."""
    log_u = math.log1p(-u) if upper else math.log(u)
    # 2Φ(m) − 1 = u^(1/n)  ⇔  Φ(−m) = (1 − u^(1/n)) / 2
    return float(-ndtri(-math.expm1(log_u / n) / 2.0))


def _support(n: int) -> tuple[float, float]:
    """An interval holding all but ~1e-17 of the block maximum's mass."""
    return max(_max_quantile(1e-18, n), 1e-6), _max_quantile(1e-17, n, upper=True)


@lru_cache(maxsize=8)
def _gauss_legendre(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(k)


def _nodes(breaks: np.ndarray, k: int = GL_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes and weights on consecutive pieces [breaks[i], breaks[i+1]]."""
    x, w = _gauss_legendre(k)
    a, b = breaks[:-1, None], breaks[1:, None]
    half = (b - a) / 2
    return (a + half * (x + 1)).ravel(), (half * w).ravel()


def _quantize(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest of the sorted `values` (cells split at midpoints), saturating; ties are measure zero."""
    mids = (values[1:] + values[:-1]) / 2
    return values[np.searchsorted(mids, y)]


def _block_error(m: np.ndarray, scale: np.ndarray, levels: np.ndarray, n: int) -> np.ndarray:
    """h(m): the expected squared error of a block of n whose maximum is m and whose grid is
    `scale · levels` (scale an array like m).

    I(m) = G(m) − G(−m), G(y) = ∫_{−∞}^{y} (Q(x) − x)² φ(x) dx: the whole cells below the one
    holding y (a running sum over the grid's cells, once per distinct scale: the block scale
    is piecewise constant in m for MX and NVFP4) and the part of that cell below y."""
    scales, which = np.unique(scale, return_inverse=True)
    values = scales[:, None] * levels[None, :]  # (S, K)
    inf = np.full((len(scales), 1), np.inf)
    lo = np.concatenate([-inf, (values[:, 1:] + values[:, :-1]) / 2], axis=1)
    hi = np.concatenate([lo[:, 1:], inf], axis=1)
    c0, c1, c2 = gaussian_interval_moments(lo, hi)
    below = np.concatenate([np.zeros((len(scales), 1)), np.cumsum(c2 - 2 * values * c1 + values**2 * c0, axis=1)],
                           axis=1)
    level_mids = (levels[1:] + levels[:-1]) / 2

    def cumulative(y):
        k = np.searchsorted(level_mids, y / scale)  # the cell holding y
        v, a = values[which, k], lo[which, k]
        p0, p1, p2 = gaussian_interval_moments(a, np.maximum(y, a))
        return below[which, k] + (p2 - 2 * v * p1 + v**2 * p0)

    inner = cumulative(m) - cumulative(-m)
    up, down = _quantize(levels, m / scale) * scale, _quantize(levels, -m / scale) * scale
    edge = 0.5 * ((up - m) ** 2 + (down + m) ** 2)
    return edge + (n - 1) * inner / np.exp(_log_two_phi_minus_one(m))


def _expected_block_error(breaks: np.ndarray, scale_of, levels: np.ndarray, n: int, upto: float | None = None):
    """E[h(M)] over the pieces `breaks` (and E[h(M) | M ≤ upto] when given)."""
    if upto is not None:
        breaks = np.concatenate([breaks[breaks < upto], [upto]])
    m, w = _nodes(np.unique(breaks))
    dens = np.exp(_log_max_density(m, n))
    h = _block_error(m, scale_of(m), levels, n)
    total = float(np.sum(w * dens * h))
    if upto is not None:
        total /= math.exp(n * float(_log_two_phi_minus_one(np.array([upto]))[0]))
    return total


def absmax_grid_gmse(levels: np.ndarray, n: int) -> float:
    """The GMSE of a grid of sorted `levels` placed at the block absmax (levels ±1 at ±absmax;
    levels c·q with c < 1: the grid q clipped at c·absmax) on blocks of n i.i.d. N(0, 1)."""
    lo, hi = _support(n)
    breaks = np.linspace(lo, hi, 97)
    return _expected_block_error(breaks, lambda m: m, levels, n) / n


def _mx_gmse(part: MXQuantizer) -> float:
    fp, emax, _ = MX_ELEMENTS[part.element]
    levels = fp_levels(fp) if fp is not None else np.arange(-127, 128) / 64.0
    n = part.block
    lo, hi = _support(n)
    breaks = [lo, hi]
    for k in range(math.floor(math.log2(lo)), math.floor(math.log2(hi)) + 1):
        X = 2.0 ** (k - emax)
        pos = levels[levels >= 0] * X
        mids = (pos[1:] + pos[:-1]) / 2  # where ±m crosses a cell edge
        breaks += [2.0**k, *mids[(mids > 2.0**k) & (mids < 2.0 ** (k + 1))]]
    breaks = np.clip(np.array(breaks), lo, hi)

    def scale(m):
        return np.exp2(np.floor(np.log2(m)) - emax)  # m is never a power of two at a node

    return _expected_block_error(breaks, scale, levels, n) / n


def _nvfp4_block_errors(g: float, n: int, upto: float) -> tuple[float, float]:
    """For tensor scale g: E[h(M) | M ≤ upto] and h(upto)."""
    e4m3 = _positive_levels(E4M3)
    e2m1 = fp_levels(E2M1)
    lo, _ = _support(n)
    # the block scale s·g is piecewise constant in m (E4M3 rounding of m / 6g), and ±m crosses
    # an E2M1 cell edge of the grid s·g at (edge · s · g)
    s_mids = (e4m3[1:] + e4m3[:-1]) / 2 * 6 * g
    edges = (np.outer(e4m3, _E2M1_MIDS) * g).ravel()
    breaks = np.concatenate([[lo, upto], s_mids, edges])
    breaks = np.unique(breaks[(breaks >= lo) & (breaks <= upto)])
    codes = np.concatenate([[0.0], e4m3])

    def scale(m):  # s = 0 (underflow) needs m < 6g·2^-10: no mass here
        return _quantize(codes, np.minimum(m / (6 * g), E4M3.max_value)) * g

    rest = _expected_block_error(breaks, scale, e2m1, n, upto=upto)
    top = float(_block_error(np.array([upto]), scale(np.array([upto])), e2m1, n)[0])
    return rest, top


def _nvfp4_gmse(part: NVFP4Quantizer, numel: int, t_pieces: int = 6) -> float:
    n = part.block
    blocks = numel // n
    if blocks == 1:  # the block maximum is the tensor maximum
        t_lo, t_hi = _support(n)
    else:
        t_lo, t_hi = _max_quantile(1e-13, numel), _max_quantile(1e-13, numel, upper=True)
    t, wt = _nodes(np.linspace(t_lo, t_hi, t_pieces + 1))
    dens_t = np.exp(_log_max_density(t, numel))
    total = 0.0
    for tj, wj, dj in zip(t, wt, dens_t):
        rest, top = _nvfp4_block_errors(tj / (6.0 * E4M3.max_value), n, tj)
        total += wj * dj * ((blocks - 1) * rest + top)
    return total / numel


def nvfp4_gmse_at_tensor_amax(amax: float, block: int = 16) -> float:
    """NVFP4's GMSE on Gaussian blocks at a static FP32 tensor scale g = amax / 2688 (`amax` in
    units of σ, as a scale calibrated in advance would be): the blocks' own maxima are
    unconstrained, so a block whose maximum exceeds `amax` saturates its E4M3 scale at 448.

    Where no block saturates (amax ≳ 6) it is periodic in log2(amax) with period 1 (doubling g
    doubles every E4M3 block scale, exactly, while they stay in E4M3's normal range) and
    wobbles over a period between 0.0090437 and 0.0090591 (mean 0.0090515) as the block
    scales shift on the E4M3 grid. The published 0.0090463 is its value at amax = 4.5, where
    one block in 9,000 saturates (+4.6e-5 relative). The GMSE at a shape (`_nvfp4_gmse`) is
    the other convention: each tensor's own maximum sets its scale and bounds every block's
    (0.0090450 at 512 × 4096, 0.0090480 at 4096 × 4096)."""
    lo, hi = _support(block)
    rest, _ = _nvfp4_block_errors(amax / (6.0 * E4M3.max_value), block, hi)
    return rest / block


_E2M1_MIDS = (lambda p: (p[1:] + p[:-1]) / 2)(fp_levels(E2M1)[fp_levels(E2M1) >= 0])


@lru_cache(maxsize=8)
def _positive_levels_cached(spec) -> np.ndarray:
    levels = fp_levels(spec)
    return levels[levels > 0]


def _positive_levels(spec) -> np.ndarray:
    return _positive_levels_cached(spec)


def exact_block_gmse(part: Part, shape: tuple[int, int], tensor_amax: float | None = None) -> float | None:
    """The exact GMSE of one block-scaled part on a (rows, cols) Gaussian tensor, or None when
    it is not a block format this module integrates. NVFP4 with `tensor_amax`: at the fixed
    tensor scale that tensor maximum sets (`nvfp4_gmse_at_tensor_amax`) instead of averaged
    over the tensor maximum of the shape."""
    rows, cols = shape
    if isinstance(part, MXQuantizer):
        return _mx_gmse(part) if cols % part.block == 0 else None
    if isinstance(part, NVFP4Quantizer):
        if tensor_amax is not None:
            return nvfp4_gmse_at_tensor_amax(tensor_amax, part.block)
        return _nvfp4_gmse(part, rows * cols) if cols % part.block == 0 else None
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "absmax":
        group = part.scaling.group
        n = rows * cols if group == "tensor" else cols if group == "row" else int(group)
        if cols % n and group not in ("tensor", "row"):
            return None
        if n < 2:
            return None
        return absmax_grid_gmse(np.sort(np.asarray(part.levels, dtype=np.float64)), n)
    return None
