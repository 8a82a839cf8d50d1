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


_EXP_MASK = {torch.float32: (torch.int32, 0x7F800000, 23), torch.float64: (torch.int64, 0x7FF0000000000000, 52)}


def round_fp(x: torch.Tensor, spec: FPSpec) -> torch.Tensor:
    """Round to the nearest value of the ExMy format, ties to even, saturating at its largest
    finite value (never Inf/NaN), with subnormals.

    The quantization step of a value is 2^(e − man), e = max(⌊log2|x|⌋, e_min); it is read off
    the exponent bits of the float (no log2, no frexp), and x/step is rounded by torch.round
    (half to even). Dividing and multiplying by a power of two is exact, so the result is the
    correctly rounded value in float32 and float64 alike."""
    if x.dtype not in _EXP_MASK:
        return round_fp(x.float(), spec).to(x.dtype)
    int_dtype, exp_mask, mant_bits = _EXP_MASK[x.dtype]
    out = x.clamp(-spec.max_value, spec.max_value)
    step_bits = out.view(int_dtype).bitwise_and(exp_mask)  # 2^e as raw bits
    step_bits.sub_(spec.man << mant_bits)  # 2^(e - man)
    step = step_bits.view(x.dtype).clamp_min_(2.0 ** (spec.min_normal_exp - spec.man))
    return out.div_(step).round_().mul_(step)


def round_to_grid(y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Nearest value of an arbitrary sorted grid (cells split at the midpoints), saturating."""
    mids = (levels[1:] + levels[:-1]) / 2
    idx = torch.bucketize(y, mids)
    return levels[idx]
