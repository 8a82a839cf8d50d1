"""Scalar quantizers: a grid of levels, a scale rule and a granularity.

Every grid is normalised so its outermost level is 1; the scale puts that level at α*·RMS
(default; α* minimises the Gaussian MSE of the grid, so an RMS-scaled grid is the MSE-optimal
member of its family on Gaussian data), at the absmax, or at an MSE-searched clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from capscale.errors import CapscaleError
from capscale.formats import fastpath, grids
from capscale.formats.base import (
    Part,
    Scaling,
    finite_view,
    group_view,
    masked_absmax,
    robust_rms,
    saturating_cast,
)
from capscale.formats.fastpath import Decision
from capscale.formats.gaussian import optimal_scale
from capscale.formats.rounding import (
    round_fp,
    round_to_grid,
    round_uniform_nozero,
    round_uniform_zero,
)


def _own(part, cls, *methods) -> bool:
    """Whether `part` rounds with `cls`'s own methods (a subclass may round otherwise)."""
    return all(getattr(type(part), m) is getattr(cls, m) for m in methods)


SCALING_MODIFIERS = ("rms", "absmax", "mse", "tensor", "row", "gG")
# clip ratios tried by the "mse" rule, as fractions of the group absmax
MSE_CLIP_CANDIDATES = tuple(np.linspace(0.25, 1.0, 31).tolist())


@dataclass(frozen=True)
class ScalarQuantizer(Part):
    """Base of the scalar grids. Subclasses give `levels` (normalised, float64), `code_bits`,
    `round_normalised(y)` and `spec_base`."""

    scaling: Scaling = field(default_factory=Scaling)
    default_scaling = Scaling()
    kind = "scalar"
    terminal = True

    # --- to define in subclasses ---
    @property
    def spec_base(self) -> str:
        raise NotImplementedError

    @cached_property
    def levels(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def code_bits(self) -> float:
        raise NotImplementedError

    def round_normalised(self, y: torch.Tensor) -> torch.Tensor:
        return round_to_grid(y, torch.as_tensor(self.levels, dtype=y.dtype, device=y.device))

    def extra_modifiers(self) -> list[str]:
        return []

    # --- shared ---
    @property
    def spec(self) -> str:
        mods = self.extra_modifiers() + self.scaling.modifiers(self.default_scaling)
        return ":".join([self.spec_base, *mods])

    @cached_property
    def alpha(self) -> float:
        """α*: the outermost level in units of σ that minimises the Gaussian MSE."""
        return optimal_scale(self.levels)[0]

    @property
    def trust_radius(self) -> float | None:
        if self.scaling.rule != "rms":
            return None
        return float(self.alpha * np.max(np.diff(self.levels)) / 2)

    @property
    def clip_radius(self) -> float | None:
        return float(self.alpha) if self.scaling.rule == "rms" else None

    def scale(self, xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
        if self.scaling.rule == "rms":
            return robust_rms(xv, av) * self.alpha
        amax = masked_absmax(xv, av)
        if self.scaling.rule == "absmax":
            return amax
        return amax * self._best_clip(xv, av, amax)

    def _best_clip(self, xv, av, amax) -> torch.Tensor:
        """Per group, the clip ratio c (of the absmax) with the least squared error."""
        y = xv / torch.where(amax > 0, amax, torch.ones_like(amax))
        best_err, best_c = None, None
        for c in MSE_CLIP_CANDIDATES:
            err = (self.round_normalised(y / c) * c - y).square_()
            if av is not None:
                err = torch.where(av, err, torch.zeros((), dtype=err.dtype, device=err.device))
            err = err.sum(dim=-1, keepdim=True)
            if best_err is None:
                best_err, best_c = err, torch.full_like(err, c)
            else:
                better = err < best_err
                best_err = torch.where(better, err, best_err)
                best_c = torch.where(better, torch.full_like(err, c), best_c)
        return best_c

    def scale64(self, xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
        """The group scales in float64, the same numbers for the fast path and the reference:
        the RMS summed in float64, the absmax exactly, the MSE search on float64 values."""
        if xv.dtype == torch.float64:
            return self.scale(xv, av)
        if self.scaling.rule == "rms":
            return fastpath.rms64(xv, av) * self.alpha
        if self.scaling.rule == "absmax":
            return (masked_absmax(xv, av) if av is not None else fastpath.absmax(xv)).double()
        return self.scale(xv.double(), av)

    native_low_precision = True  # bf16/fp16 inputs are handled here, rounded once to their dtype

    def apply(self, x2d, active):
        """Scale statistics over the finite active entries, in float64 (so the quotient by the
        scale is exact before its one rounding, and denormal or huge groups stay finite);
        non-finite entries pass through unchanged. Float32, bf16 and fp16 tensors of finite
        values take the float32 fast path, whose outputs are the same bits
        (:mod:`capscale.formats.fastpath`)."""
        xv = group_view(x2d, self.scaling.group, self.spec)
        av = None if active is None else group_view(active, self.scaling.group, self.spec)
        dec = self.fast_decision
        if av is None and dec is not None and fastpath.takes(xv):
            s = self.scale64(xv, None)
            if bool(torch.isfinite(s).all()):  # NaN and ±inf entries reach their group's statistic
                dtype = xv.dtype

                def reference(x64, s64):
                    return saturating_cast(self.dequantize_scaled(x64, s64), dtype)

                out = fastpath.grid_quantize(xv.reshape(-1, xv.shape[-1]), s.reshape(-1, 1), dec,
                                             self.level_values, reference)
                return out.reshape(x2d.shape), None
        clean, stat, nonfinite = finite_view(xv, av)
        q = saturating_cast(self.dequantize_scaled(clean.double(), self.scale64(clean, stat)), xv.dtype)
        if nonfinite is not None:
            q = torch.where(nonfinite, xv, q)
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape), None

    def dequantize_scaled(self, xv: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x̂ for values xv whose outermost level sits at s (per group); ±0 where s == 0."""
        return self.level_values(self.round_normalised(xv / torch.where(s > 0, s, torch.ones_like(s))), s)

    def level_values(self, k: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x̂ in float64 of the decided levels k (what `round_normalised` returns) at scale s."""
        return k * s

    @cached_property
    def fast_decision(self) -> Decision | None:
        """How the grid decides, for the float32 fast path (the nearest level of a sorted grid,
        ties down, as `round_to_grid`); None for subclasses that round otherwise."""
        if not _own(self, ScalarQuantizer, "round_normalised", "dequantize_scaled", "level_values"):
            return None
        lv = torch.as_tensor(self.levels, dtype=torch.float64)
        return Decision("lut", 1.0, mids=((lv[1:] + lv[:-1]) / 2).numpy(), levels=lv.numpy())

    def bits(self, rows, cols, active_fraction):
        return active_fraction * self.code_bits + self.scaling.overhead_bits(rows, cols), 0.0


@dataclass(frozen=True)
class IntQuantizer(ScalarQuantizer):
    """INT-b. Default: QuEST's grid, 2^b evenly spaced levels with no zero level. With `zero`:
    the signed grid k/(2^(b-1) − 1), |k| ≤ 2^(b-1) − 1, which has a zero level."""

    n_bits: int = 4
    zero: bool = False
    accepted_modifiers = ("zero", *SCALING_MODIFIERS, "had")

    def __post_init__(self):
        if not 1 <= self.n_bits <= 8:
            raise CapscaleError(f"int{self.n_bits}: INT bit widths go from 1 to 8")
        if self.zero and self.n_bits < 2:
            raise CapscaleError("int1:zero: a grid with a zero level needs at least 2 bits")

    @property
    def spec_base(self):
        return f"int{self.n_bits}"

    def extra_modifiers(self):
        return ["zero"] if self.zero else []

    @cached_property
    def levels(self):
        return grids.int_zero_levels(self.n_bits) if self.zero else grids.int_levels(self.n_bits)

    @property
    def code_bits(self):
        return float(self.n_bits)

    def round_normalised(self, y):
        if self.zero:
            return round_uniform_zero(y, 2 ** (self.n_bits - 1) - 1)
        return round_uniform_nozero(y, 2**self.n_bits)

    def dequantize_scaled(self, xv, s):
        # the level index from x·m / s (x·m exact, one division), ties to even on the signed
        # grid and upwards on QuEST's (floor(t + 1/2)); x̂ = level · s
        safe = torch.where(s > 0, s, torch.ones_like(s))
        if self.zero:
            m = 2 ** (self.n_bits - 1) - 1
            t = (xv * m).div_(safe)
            return self.level_values(t.round_().clamp_(-m, m), s)
        # QuEST's grid: levels at u = k − h/2 for u = x·(h/2)/s, so the nearest (ties upwards)
        # is k = ⌊u⌋ + (h+1)/2 (adding the offset before the floor would round a tiny u)
        h = 2**self.n_bits - 1
        t = (xv * (h / 2)).div_(safe).floor_().add_((h + 1) // 2).clamp_(0, h)
        return self.level_values(t, s)

    def level_values(self, k, s):
        if self.zero:
            return (k * s).div_(2 ** (self.n_bits - 1) - 1)
        h = 2**self.n_bits - 1
        return (k.mul(2).sub_(h) * s).div_(h)

    @cached_property
    def fast_decision(self):
        if not _own(self, IntQuantizer, "dequantize_scaled", "level_values"):
            return None
        if self.zero:
            m = 2 ** (self.n_bits - 1) - 1
            return Decision("round", float(m), top=m)
        h = 2**self.n_bits - 1
        return Decision("floor", h / 2, top=h, offset=(h + 1) // 2)


@dataclass(frozen=True)
class TernaryQuantizer(ScalarQuantizer):
    """Three levels {−1, 0, +1}·scale, packed five to a byte (1.6 bits per value)."""

    accepted_modifiers = (*SCALING_MODIFIERS, "had")

    @property
    def spec_base(self):
        return "ternary"

    @cached_property
    def levels(self):
        return grids.ternary_levels()

    @property
    def code_bits(self):
        return 8 / 5

    def round_normalised(self, y):
        return round_uniform_zero(y, 1)

    @cached_property
    def fast_decision(self):
        if not _own(self, TernaryQuantizer, "round_normalised", "dequantize_scaled", "level_values"):
            return None
        return Decision("round", 1.0, top=1)


@dataclass(frozen=True)
class FPQuantizer(ScalarQuantizer):
    """A floating-point grid ExMy (with subnormals), scaled like any other grid. Rounding is
    to nearest, ties to even, saturating at the largest finite value."""

    exp: int = 2
    man: int = 1
    accepted_modifiers = (*SCALING_MODIFIERS, "had")

    def __post_init__(self):
        if self.exp < 1 or self.man < 0 or 1 + self.exp + self.man not in (4, 5, 6, 7, 8):
            raise CapscaleError(
                f"e{self.exp}m{self.man}: FP formats need at least one exponent bit and "
                "4 to 8 bits in all (e.g. e2m1, e3m0, e2m3, e3m2, e4m3, e5m2)"
            )

    @property
    def spec_base(self):
        return f"e{self.exp}m{self.man}"

    @cached_property
    def fp(self):
        return grids.fp_spec(self.exp, self.man)

    @cached_property
    def levels(self):
        return grids.normalised(grids.fp_levels(self.fp))

    @property
    def code_bits(self):
        return float(self.fp.bits)

    def round_normalised(self, y):
        m = self.fp.max_value
        return round_fp(y * m, self.fp) / m

    def dequantize_scaled(self, xv, s):
        # x·max / s: the product is exact, the division the one rounding before the grid's
        m = self.fp.max_value
        return self.level_values(round_fp((xv * m).div_(torch.where(s > 0, s, torch.ones_like(s))), self.fp), s)

    def level_values(self, k, s):
        return (k * s).div_(self.fp.max_value)

    @cached_property
    def fast_decision(self):
        if not _own(self, FPQuantizer, "dequantize_scaled", "level_values"):
            return None
        return Decision("fp", float(self.fp.max_value), fp=self.fp)


@dataclass(frozen=True)
class NF4Quantizer(ScalarQuantizer):
    """NF4 as bitsandbytes defines it: its asymmetric 16-level table, absmax scaling per block
    of 64 by default, the absmax stored in fp32 (4 + 32/64 = 4.5 bits per value)."""

    scaling: Scaling = field(default_factory=lambda: Scaling("absmax", 64))
    default_scaling = Scaling("absmax", 64)
    accepted_modifiers = (*SCALING_MODIFIERS, "had")

    @property
    def spec_base(self):
        return "nf4"

    @cached_property
    def levels(self):
        return grids.NF4_LEVELS.copy()

    @property
    def code_bits(self):
        return 4.0

    def bits(self, rows, cols, active_fraction):
        b, left = super().bits(rows, cols, active_fraction)
        if self.scaling.group not in ("tensor", "row"):  # bitsandbytes stores the absmax in fp32
            b += (32 - 16) / int(self.scaling.group)
        return b, left


@dataclass(frozen=True)
class LloydMaxQuantizer(ScalarQuantizer):
    """The MSE-optimal b-bit scalar quantizer for N(0, 1) (Lloyd–Max), scaled by the RMS."""

    n_bits: int = 3
    accepted_modifiers = (*SCALING_MODIFIERS, "had")

    def __post_init__(self):
        if not 1 <= self.n_bits <= 8:
            raise CapscaleError(f"lloydmax{self.n_bits}: Lloyd–Max bit widths go from 1 to 8")

    @property
    def spec_base(self):
        return f"lloydmax{self.n_bits}"

    @cached_property
    def levels(self):
        return grids.normalised(grids.lloyd_max_levels(2**self.n_bits))

    @property
    def code_bits(self):
        return float(self.n_bits)
