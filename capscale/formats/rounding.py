"""Rounding kernels in plain torch: onto uniform grids, onto FP ExMy values, onto any sorted grid.

All take and return tensors of the input's dtype; none allocates more than a few temporaries.
"""

from __future__ import annotations

import torch

from capscale.formats.grids import FPSpec


def round_uniform_nozero(y: torch.Tensor, n_levels: int) -> torch.Tensor:
    """Round y (in units of the outermost level) to n evenly spaced levels on [-1, 1], no zero level
    when n is even (QuEST's INT grid), saturating outside."""
    half_steps = n_levels - 1  # the grid is -1 + 2k/(n-1)
    idx = torch.floor((y + 1.0) * (half_steps / 2.0) + 0.5).clamp_(0, half_steps)
    return idx.mul_(2.0 / half_steps).sub_(1.0)


def round_uniform_zero(y: torch.Tensor, max_int: int) -> torch.Tensor:
    """Round y to k / max_int for integer |k| <= max_int (the signed grid with a zero level).
    Ties go to even (torch.round)."""
    return torch.round(y * max_int).clamp_(-max_int, max_int).div_(max_int)


def round_fp(x: torch.Tensor, spec: FPSpec) -> torch.Tensor:
    """Round to the nearest value of the ExMy format, ties to even, saturating at its largest
    finite value (never Inf/NaN), with subnormals. Exact in float32 and float64 for the
    formats used here (the result is computed by power-of-two scaling and torch.round)."""
    max_v = spec.max_value
    x = x.clamp(-max_v, max_v)
    _, e = torch.frexp(x)  # |x| = m·2^e with m in [0.5, 1): floor(log2|x|) = e - 1
    e = (e - 1).clamp_(min=spec.min_normal_exp)  # subnormals share the smallest normal binade
    shift = (spec.man - e).to(torch.int32)
    return torch.ldexp(torch.round(torch.ldexp(x, shift)), -shift).to(x.dtype)


def round_to_grid(y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Nearest value of an arbitrary sorted grid (cells split at the midpoints), saturating."""
    mids = (levels[1:] + levels[:-1]) / 2
    idx = torch.bucketize(y, mids)
    return levels[idx]
