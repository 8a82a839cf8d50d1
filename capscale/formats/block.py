"""Block formats with the exact scale encodings of their specifications.

MX (OCP Microscaling Formats v1.0): blocks of 32 along the row share an E8M0 scale
X = 2^(⌊log2 amax⌋ − emax_elem), emax_elem being the exponent of the element format's largest
normal value; elements are x/X rounded to the element format (RNE) with saturation, so a
block maximum may saturate. ⌊log2⌋ comes from the exponent bits (frexp), never a float log2.
Bits per value: element bits + 8/32.

NVFP4: blocks of 16, a per-tensor FP32 scale g = amax_tensor / (6·448), a per-block E4M3 scale
s = E4M3_RNE(amax_block / (6g)), elements E2M1_RNE(x / (s·g)) clamped to ±6 (dividing by the
*rounded* scale can push elements past 6). Bits per value: 4 + 8/16 + 32/numel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from capscale.formats.base import TENSOR_SCALE_BITS, Part, group_view, masked_absmax
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


def _zeros_like(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


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
        shared = (floor_log2(torch.where(amax > 0, amax, torch.ones_like(amax))) - emax).clamp_(-127, 127)
        scale = torch.ldexp(torch.ones_like(amax), shared.to(torch.int32))
        y = xv / scale
        if fp is None:  # MXINT8: two's complement with an implicit 2^-6, kept symmetric (±127/64)
            q = torch.round(y * 64).clamp_(-127, 127) / 64
        else:
            q = round_fp(y, fp)
        q = torch.where(amax > 0, q * scale, _zeros_like(q))
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape), None

    def bits(self, rows, cols, active_fraction):
        return active_fraction * MX_ELEMENTS[self.element][2] + 8 / self.block, 0.0


@dataclass(frozen=True)
class NVFP4Quantizer(Part):
    block: int = 16
    kind = "scalar"
    accepted_modifiers = ("had",)

    @property
    def spec(self) -> str:
        return "nvfp4"

    def apply(self, x2d, active):
        xv = group_view(x2d, self.block, self.spec)
        av = None if active is None else group_view(active, self.block, self.spec)
        amax_block = masked_absmax(xv, av)
        amax_tensor = amax_block.max()
        if amax_tensor == 0:
            return x2d, None  # every active entry is already exactly 0
        g = (amax_tensor / (6.0 * E4M3.max_value)).to(torch.float32).to(xv.dtype)
        s = round_fp(amax_block / (6.0 * g), E4M3)
        denom = torch.where(s > 0, s * g, torch.ones_like(s))
        q = round_fp((xv / denom).clamp_(-6.0, 6.0), E2M1) * denom
        q = torch.where(s > 0, q, _zeros_like(q))
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape), None

    def bits(self, rows, cols, active_fraction):
        return active_fraction * 4 + 8 / self.block + TENSOR_SCALE_BITS / (rows * cols), 0.0
