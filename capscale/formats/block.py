"""Block formats with the exact scale encodings of their specifications.

MX (OCP Microscaling Formats v1.0): blocks of 32 along the row share an E8M0 scale
X = 2^(⌊log2 amax⌋ − emax_elem), emax_elem being the exponent of the element format's largest
normal value; elements are x/X rounded to the element format (RNE) with saturation, so a
block maximum may saturate. ⌊log2⌋ comes from the exponent bits (frexp), never a float log2.
Bits per value: element bits + 8/32.

NVFP4: blocks of 16, a per-tensor FP32 scale g = amax_tensor / (6·448), a per-block E4M3 scale
s = E4M3_RNE(amax_block / (6g)), elements E2M1_RNE(x / (s·g)) clamped to ±6 (dividing by the
*rounded* scale can push elements past 6). Bits per value: 4 + 8/16 + 32/numel.

Non-finite inputs, as OCP MX v1.0 and microxcaling treat them: a block holding a NaN or ±inf
gets the NaN scale code, so every value of that block is NaN (torchao likewise NaNs a block
with a NaN). NVFP4 does the same per block of 16, its tensor scale is taken over the finite
blocks, and it is kept at least the smallest positive FP32 (2^-149) so that a tensor of
denormals keeps finite scales. An all-zero block keeps its signed zeros. Elements are divided
by the stored scales in float64 (exact for MX, one rounding for NVFP4's s·g) and rounded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from capscale.formats import fastpath
from capscale.formats.base import (
    TENSOR_SCALE_BITS,
    Part,
    group_view,
    masked_absmax,
    saturating_cast,
)
from capscale.formats.fastpath import Decision
from capscale.formats.grids import FPSpec, fp_spec
from capscale.formats.rounding import round_fp

# element formats of the MX spec: name -> (FPSpec or None for INT8, emax_elem, bits)
MX_ELEMENTS: dict[str, tuple[FPSpec | None, int, int]] = {
    "fp4": (fp_spec(2, 1), 2, 4),
    "fp6_e2m3": (fp_spec(2, 3), 2, 6),
    "fp6_e3m2": (fp_spec(3, 2), 4, 6),
    "fp8_e4m3": (fp_spec(4, 3), 8, 8),
    "fp8_e5m2": (fp_spec(5, 2), 15, 8),
    "int8": (None, 0, 8),
}
MX_ALIASES = {"mxfp6": "mxfp6_e2m3", "mxfp8": "mxfp8_e4m3"}
E4M3 = fp_spec(4, 3)
E2M1 = fp_spec(2, 1)


def floor_log2(a: torch.Tensor) -> torch.Tensor:
    """⌊log2 a⌋ for a > 0, exactly, from the float's exponent bits."""
    _, e = torch.frexp(a)
    return e - 1


def _nan_blocks(q: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """NaN for every value of the blocks marked `bad` (a NaN or ±inf among their entries)."""
    if bool(bad.any()):
        q = torch.where(bad, torch.full((), float("nan"), dtype=q.dtype, device=q.device), q)
    return q


@dataclass(frozen=True)
class MXQuantizer(Part):
    element: str = "fp4"
    block: int = 32
    kind = "scalar"
    accepted_modifiers = ("had",)

    @property
    def spec(self) -> str:
        return f"mx{self.element}"

    def apply(self, x2d, active):
        fp, emax, _ = MX_ELEMENTS[self.element]
        xv = group_view(x2d, self.block, self.spec)
        av = None if active is None else group_view(active, self.block, self.spec)
        amax = masked_absmax(xv, av)
        bad = ~torch.isfinite(amax)
        ok = (amax > 0) & ~bad
        shared = (floor_log2(torch.where(ok, amax, torch.ones_like(amax))) - emax).clamp_(-127, 127)
        scale = torch.ldexp(torch.ones_like(amax), shared.to(torch.int32))
        y = torch.where(torch.isfinite(xv), xv, torch.zeros((), dtype=xv.dtype, device=xv.device)) / scale
        if fp is None:  # MXINT8: two's complement with an implicit 2^-6, kept symmetric (±127/64)
            q = torch.round(y * 64).clamp_(-127, 127) / 64
        else:
            q = round_fp(y, fp)
        q = _nan_blocks(torch.where(ok, q * scale, xv), bad)
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape), None

    def bits(self, rows, cols, active_fraction):
        return active_fraction * MX_ELEMENTS[self.element][2] + 8 / self.block, 0.0


def _nvfp4_elements(x64: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """NVFP4's elements in float64: E2M1_RNE(x / (s·g)) clamped to ±6, times s·g; signed zeros
    in a block whose scale underflows to 0."""
    q = round_fp((x64 / torch.where(denom > 0, denom, torch.ones_like(denom))).clamp_(-6.0, 6.0), E2M1)
    return torch.where(denom > 0, _times_scale(q, denom), x64 * 0.0)


def _times_scale(q: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    return q * denom


# the E2M1 decision of x / (s·g), for the float32 fast path
_E2M1_DECISION = Decision("fp", 1.0, fp=E2M1)


@dataclass(frozen=True)
class NVFP4Quantizer(Part):
    block: int = 16
    kind = "scalar"
    accepted_modifiers = ("had",)

    @property
    def spec(self) -> str:
        return "nvfp4"

    native_low_precision = True  # bf16/fp16 inputs are rounded once to their own dtype here

    def apply(self, x2d, active):
        xv = group_view(x2d, self.block, self.spec)
        av = None if active is None else group_view(active, self.block, self.spec)
        amax_block = (fastpath.absmax(xv) if av is None else masked_absmax(xv, av)).double()
        bad = ~torch.isfinite(amax_block)
        any_bad = bool(bad.any())
        if any_bad:
            amax_block = torch.where(bad, torch.zeros((), dtype=torch.float64), amax_block)
        amax_tensor = amax_block.max()
        if amax_tensor == 0:  # every finite active entry is already exactly ±0
            q = _nan_blocks(xv, bad)
            return (q if av is None else torch.where(av, q, xv)).reshape(x2d.shape), None
        # the tensor scale is stored in FP32, at least its smallest positive value
        g = (amax_tensor.to(torch.float32) / (6.0 * E4M3.max_value)).clamp_min(2.0**-149).double()
        s = round_fp(amax_block / (6.0 * g), E4M3)
        denom = s * g  # exact in float64 (4 + 24 significant bits)
        if av is None and not any_bad and fastpath.takes(xv):
            dtype = xv.dtype

            def reference(x64, d64):
                return saturating_cast(_nvfp4_elements(x64, d64), dtype)

            q = fastpath.grid_quantize(xv.reshape(-1, self.block), denom.reshape(-1, 1), _E2M1_DECISION,
                                       _times_scale, reference)
            return q.reshape(x2d.shape), None
        x64 = torch.where(torch.isfinite(xv), xv, torch.zeros((), dtype=xv.dtype, device=xv.device)).double()
        q = _nan_blocks(saturating_cast(_nvfp4_elements(x64, denom), xv.dtype), bad)
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape), None

    def bits(self, rows, cols, active_fraction):
        return active_fraction * 4 + 8 / self.block + TENSOR_SCALE_BITS / (rows * cols), 0.0
