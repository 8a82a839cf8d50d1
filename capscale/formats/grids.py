"""Scalar grids: the level sets of INT, FP ExMy, NF4 and Lloyd–Max quantizers.

Every grid here is a sorted float64 numpy array. `normalised(levels)` rescales a grid so that
its outermost level is 1; a scale rule then places that outermost level at a chosen value
(α·RMS, the block absmax, ...). The exact Gaussian MSE of a grid at a given scale, and the
scale that minimises it, live in :mod:`capscale.formats.gaussian`; the Lloyd–Max solver needs
the same Gaussian cell moments and takes them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from capscale.errors import CapscaleError


def int_levels(bits: int) -> np.ndarray:
    """QuEST's INT grid: 2^b levels, no zero level, evenly spaced on [-1, 1]."""
    n = 2**bits
    return (2.0 * np.arange(n) - (n - 1)) / (n - 1)


def int_zero_levels(bits: int) -> np.ndarray:
    """The signed INT grid with a zero level: k / (2^(b-1) - 1) for |k| <= 2^(b-1) - 1."""
    if bits < 2:
        raise CapscaleError(f"int{bits}:zero needs at least 2 bits (a zero and ±1 level)")
    m = 2 ** (bits - 1) - 1
    return np.arange(-m, m + 1, dtype=np.float64) / m


def ternary_levels() -> np.ndarray:
    return np.array([-1.0, 0.0, 1.0])


# bitsandbytes' NF4 code book (create_normal_map(offset=0.9677083, use_extra_value=True),
# normalised to [-1, 1]): 7 negative and 8 positive non-zero levels plus zero. These are the
# values that bitsandbytes ships as its table; tests rebuild them from the normal quantiles.
NF4_LEVELS = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)


@dataclass(frozen=True)
class FPSpec:
    """A floating-point element format ExMy: sign, `exp` exponent bits, `man` mantissa bits.

    `finite_codes` tells which top codes are reserved: "all" (every code is a number: the MX
    element formats E2M1, E2M3, E3M2 and every split we define ourselves), "fn" (OCP E4M3: only
    S.1111.111 is NaN) or "ieee" (OCP E5M2: the top exponent is Inf/NaN).
    """

    exp: int
    man: int
    finite_codes: str = "all"

    @property
    def bias(self) -> int:
        return 2 ** (self.exp - 1) - 1

    @property
    def min_normal_exp(self) -> int:
        return 1 - self.bias

    @property
    def max_exp(self) -> int:
        """Unbiased exponent of the largest finite binade."""
        top = 2**self.exp - 1
        if self.finite_codes == "ieee":
            top -= 1
        return top - self.bias

    @property
    def max_value(self) -> float:
        if self.finite_codes == "fn":
            mant = 2.0 - 2.0 ** (1 - self.man)  # the all-ones mantissa is NaN
        else:
            mant = 2.0 - 2.0 ** (-self.man)
        return mant * 2.0**self.max_exp

    @property
    def bits(self) -> int:
        return 1 + self.exp + self.man


def fp_spec(exp: int, man: int) -> FPSpec:
    """The element format ExMy with the reserved codes of its standard (OCP FP8 for E4M3/E5M2)."""
    if exp < 1:
        raise CapscaleError(f"e{exp}m{man}: an FP format needs at least one exponent bit (use intN)")
    if (exp, man) == (4, 3):
        return FPSpec(4, 3, "fn")
    if (exp, man) == (5, 2):
        return FPSpec(5, 2, "ieee")
    return FPSpec(exp, man, "all")


def fp_levels(spec: FPSpec) -> np.ndarray:
    """All finite values of an ExMy format (with subnormals), sorted, in its own units."""
    sub_step = 2.0 ** (spec.min_normal_exp - spec.man)
    positives = [m * sub_step for m in range(1, 2**spec.man)]
    for e in range(spec.min_normal_exp, spec.max_exp + 1):
        for m in range(2**spec.man):
            v = (1.0 + m / 2**spec.man) * 2.0**e
            if v <= spec.max_value:
                positives.append(v)
    pos = np.array(sorted(positives))
    return np.concatenate([-pos[::-1], [0.0], pos])


def normalised(levels: np.ndarray) -> np.ndarray:
    """The grid rescaled so that its outermost level is 1."""
    return levels / np.max(np.abs(levels))


@lru_cache(maxsize=64)
def lloyd_max_levels(n_levels: int, max_iter: int = 100) -> np.ndarray:
    """The MSE-optimal scalar quantizer with `n_levels` levels for N(0, 1).

    Levels are in units of σ (not normalised): they are already the optimal reconstruction
    points, each the centroid of its cell. Newton's method on the distortion D(q), from the
    Gaussian quantiles of the cell centres: the gradient is ∂D/∂q_k = 2(q_k·m0_k − m1_k) (cells
    move with the levels, but that costs nothing at midpoints) and the Hessian is tridiagonal,

        ∂²D/∂q_k² = 2·m0_k − c_{k−1} − c_k,   ∂²D/∂q_k∂q_{k+1} = −c_k,   c_k = φ(t_k)(q_{k+1} − q_k)/2,

    t_k the edge between levels k and k + 1. Far from the optimum a step is halved until D
    decreases (Lloyd's step, q_k ← m1_k/m0_k, where Newton's is not a descent direction);
    near it, full steps converge quadratically until they stop shrinking, at round-off (a
    few milliseconds at 256 levels, where Lloyd's iteration alone converges far too slowly).
    """
    from scipy.special import ndtri

    from capscale.formats.gaussian import _pdf, gaussian_cell_moments

    if n_levels < 1:
        raise CapscaleError(f"a Lloyd–Max grid needs at least one level, got {n_levels}")
    if n_levels == 1:
        return np.zeros(1)

    def cells(q):
        edges = np.concatenate([[-np.inf], (q[1:] + q[:-1]) / 2, [np.inf]])
        return gaussian_cell_moments(edges)

    def distortion(q):
        m0, m1, m2 = cells(q)
        return float(np.sum(m2 - 2 * q * m1 + q * q * m0))

    levels = ndtri((np.arange(n_levels) + 0.5) / n_levels)
    value, last = distortion(levels), np.inf
    for _ in range(max_iter):
        m0, m1, _ = cells(levels)
        grad = 2 * (levels * m0 - m1)
        gaps = np.diff(levels)
        c = _pdf((levels[1:] + levels[:-1]) / 2) * gaps / 2
        diag = 2 * m0
        diag[:-1] -= c
        diag[1:] -= c
        step = _solve_tridiagonal(diag, -c, -grad)
        if not np.all(np.isfinite(step)) or grad @ step >= 0:
            step = -grad / (2 * m0)  # Lloyd's step
        size = float(np.max(np.abs(step)))
        if size < 1e-6 * float(np.min(gaps)):  # the quadratic regime: full steps
            if size > last / 4 or size < 1e-15:  # no longer shrinking: round-off
                break
            levels, last = levels + step, size
            continue
        t = 1.0
        while t >= 1e-8:
            new = levels + t * step
            if np.all(np.diff(new) > 0) and (new_value := distortion(new)) <= value:
                break
            t /= 2
        else:  # D no longer decreases to float64 precision
            break
        levels, value, last = new, new_value, size * t
    return (levels - levels[::-1]) / 2  # exact symmetry


def _solve_tridiagonal(diag: np.ndarray, off: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """x with T x = rhs, T symmetric tridiagonal (diagonal `diag`, off-diagonal `off`):
    the Thomas algorithm."""
    n = len(diag)
    c, d = np.zeros(n), np.empty(n)
    den = diag[0]
    d[0] = rhs[0] / den
    for i in range(n):
        if i:
            den = diag[i] - off[i - 1] * c[i - 1]
            d[i] = (rhs[i] - off[i - 1] * d[i - 1]) / den
        if i < n - 1:
            c[i] = off[i] / den
    for i in range(n - 2, -1, -1):
        d[i] -= c[i] * d[i + 1]
    return d
