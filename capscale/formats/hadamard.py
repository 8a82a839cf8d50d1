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


RADIX = 16  # butterflies of up to 16 points are done as small dense matmuls


def fwht(x: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Orthonormal Walsh–Hadamard transform of the last dimension, independently per block.

    A mixed-radix fast transform: H_block = H_r ⊗ H_(block/r) (Sylvester order), so a block
    viewed as an r × (block/r) matrix X becomes H_r · X · H_(block/r); the right factor
    recurses, the radix-r factor is a small dense matmul. O(n · r · log_r block) operations.
    """
    if not is_power_of_two(block):
        raise CapscaleError(f"Hadamard block size must be a power of two, got {block}")
    n = x.shape[-1]
    if n % block:
        raise CapscaleError(f"Hadamard blocks of {block} need the last dimension ({n}) to be a multiple of {block}")
    if block <= RADIX:
        return (x.reshape(-1, block) @ _orthonormal_hadamard(block, x.dtype, x.device)).reshape(x.shape)
    rest = block // RADIX
    y = fwht(x.reshape(-1, RADIX, rest), rest)
    y = torch.matmul(_orthonormal_hadamard(RADIX, x.dtype, x.device), y)
    return y.reshape(x.shape)


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
