"""Block Walsh–Hadamard rotation: the fast transform in plain torch, O(n log n), no extension.

The orthonormal transform H/√n (Sylvester order) is symmetric and orthogonal, hence its own
inverse: applying `fwht` twice returns the input (to float round-off). A rotation by it
spreads outliers over the block, so per-row scales fit the data better; on Gaussian data it
changes nothing (an orthogonal map of i.i.d. N(0, 1) is i.i.d. N(0, 1)).
"""

from __future__ import annotations

import torch

from capscale.errors import CapscaleError


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def effective_block(block: int, length: int) -> int:
    """The Hadamard block used on rows of `length`: `block`, or the largest power of two that
    divides `length` when that is smaller (a 96-wide row is rotated in blocks of 32)."""
    largest_pow2_divisor = length & -length
    return min(block, largest_pow2_divisor)


def fwht(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform of the last dimension, independently per block."""
    if not is_power_of_two(block):
        raise CapscaleError(f"Hadamard block size must be a power of two, got {block}")
    n = x.shape[-1]
    if n % block:
        raise CapscaleError(f"Hadamard blocks of {block} need the last dimension ({n}) to be a multiple of {block}")
    # radix-2 butterflies, ping-ponging between two buffers (no allocation per stage)
    src = x.reshape(-1, block).clone()
    dst = torch.empty_like(src)
    m = src.shape[0]
    h = 1
    while h < block:
        s = src.view(m, block // (2 * h), 2, h)
        d = dst.view(m, block // (2 * h), 2, h)
        torch.add(s[:, :, 0], s[:, :, 1], out=d[:, :, 0])
        torch.sub(s[:, :, 0], s[:, :, 1], out=d[:, :, 1])
        src, dst = dst, src
        h *= 2
    return src.mul_(block**-0.5).view(x.shape)


def hadamard_matrix(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The explicit orthonormal n × n Hadamard matrix (Sylvester construction), for tests."""
    if not is_power_of_two(n):
        raise CapscaleError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / n**0.5
