"""The Format: x ↦ x̂ (compress, then decompress, in float) plus its honest bits per value.

A Format is a pipeline of parts applied left to right (``sparse0.5+int4``), optionally inside
a block Hadamard rotation (``:had`` on the last part rotates the whole pipeline). Parts pass
an *active* mask along: the entries not yet represented. Partial parts (magnitude or N:M
sparsity, outliers) decide some entries and leave the rest active; a terminal part (a
quantizer, a vector quantizer, noise) represents every active entry. Whatever is still active
at the end is stored uncompressed (bf16, 16 bits).

Tensors are seen as rows × columns: the last dimension is the row (for a weight [out, in] a
row is an output channel; for activations [..., in] a row is a token), and rotations, groups
and N:M patterns run along it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from capscale.errors import CapscaleError

DENSE_BITS = 16.0  # an uncompressed value is stored as bf16
SCALE_BITS = 16.0  # a per-row or per-group scale is stored as fp16/bf16
TENSOR_SCALE_BITS = 32.0  # a per-tensor scale is stored as fp32
# The shape at which `Format.bits_per_value` is quoted (a 4096 × 4096 weight matrix).
REFERENCE_SHAPE = (4096, 4096)


@dataclass(frozen=True)
class Scaling:
    """Where a quantizer's outermost level goes: `rule` is "rms" (at α*·RMS, α* the
    Gaussian-MSE-optimal clip of the grid), "absmax" (at the absolute maximum) or "mse" (at the
    clip c·absmax that minimises the squared error, searched per group); `group` is "tensor",
    "row" or a group size G along the row. Statistics are taken over the active entries."""

    rule: str = "rms"
    group: str | int = "row"

    def modifiers(self, default: Scaling) -> list[str]:
        mods = []
        if self.rule != default.rule:
            mods.append(self.rule)
        if self.group != default.group:
            mods.append(self.group if isinstance(self.group, str) else f"g{self.group}")
        return mods

    def overhead_bits(self, rows: int, cols: int) -> float:
        """Bits per value spent on scales."""
        if self.group == "tensor":
            return TENSOR_SCALE_BITS / (rows * cols)
        if self.group == "row":
            return SCALE_BITS / cols
        return SCALE_BITS / int(self.group)


def group_view(x2d: torch.Tensor, group: str | int, spec: str) -> torch.Tensor:
    """View a (rows, cols) tensor as (a, b, n) so that statistics over the last dim are per group."""
    rows, cols = x2d.shape
    if group == "tensor":
        return x2d.reshape(1, 1, rows * cols)
    if group == "row":
        return x2d.reshape(rows, 1, cols)
    g = int(group)
    if cols % g:
        raise CapscaleError(
            f"{spec}: groups of {g} need the last dimension ({cols}) to be a multiple of {g}"
        )
    return x2d.reshape(rows, cols // g, g)


def masked_rms(xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
    """RMS over the last dimension, counting only active entries (0 where none are)."""
    if av is None:
        return torch.linalg.vector_norm(xv, dim=-1, keepdim=True).div_(xv.shape[-1] ** 0.5)
    sq = torch.where(av, xv * xv, torch.zeros((), dtype=xv.dtype, device=xv.device))
    count = av.sum(dim=-1, keepdim=True).clamp_(min=1)
    return torch.sqrt(sq.sum(dim=-1, keepdim=True) / count)


def masked_absmax(xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
    a = xv.abs()
    if av is not None:
        a = torch.where(av, a, torch.zeros((), dtype=xv.dtype, device=xv.device))
    return a.amax(dim=-1, keepdim=True)


def robust_rms(xv: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
    """`masked_rms` that neither overflows (rows near the dtype's largest value) nor underflows
    (rows of denormals): where the plain sum of squares fails, the row is rescaled by its
    absmax first. Finite input, finite RMS."""
    rms = masked_rms(xv, av)
    amax = masked_absmax(xv, av)
    bad = torch.isinf(rms) | ((rms == 0) & (amax > 0))
    if bool(bad.any()):
        safe = torch.where(bad & (amax > 0), amax, torch.ones_like(amax))
        rescaled = masked_rms(xv / safe, av) * safe
        rms = torch.where(bad, rescaled, rms)
    return rms


def finite_view(xv: torch.Tensor, av: torch.Tensor | None):
    """(x with non-finite entries zeroed, the mask of entries to take statistics over, the
    non-finite mask or None). Scale statistics are taken over the finite active entries."""
    finite = torch.isfinite(xv)
    if bool(finite.all()):
        return xv, av, None
    clean = torch.where(finite, xv, torch.zeros((), dtype=xv.dtype, device=xv.device))
    return clean, finite if av is None else av & finite, ~finite


def saturating_cast(q: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q rounded once to `dtype`; a finite value beyond the dtype's range saturates at its
    largest finite value instead of becoming inf (a finite input never gives a non-finite x̂)."""
    if q.dtype == dtype:
        return q
    fmax = torch.finfo(dtype).max
    if q.is_floating_point() and torch.finfo(q.dtype).max > fmax:
        q = torch.where(torch.isfinite(q), q.clamp(-fmax, fmax), q)
    return q.to(dtype)


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized tensor, exactly; backward: the incoming gradient, unchanged
    (the straight-through estimator of torchao's fake quantization)."""

    @staticmethod
    def forward(ctx, x, xq):
        return xq

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Part(ABC):
    """One stage of a format pipeline. Subclasses are frozen dataclasses (so equal specs give
    equal objects) and know how to print themselves (`spec`)."""

    terminal: ClassVar[bool] = True
    kind: ClassVar[str] = "scalar"
    # modifiers a spec may give this part, for error messages
    accepted_modifiers: ClassVar[tuple[str, ...]] = ()

    @property
    @abstractmethod
    def spec(self) -> str: ...

    @abstractmethod
    def apply(
        self, x2d: torch.Tensor, active: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (x̂, still-active mask). Inactive entries of x2d must pass through unchanged."""

    @abstractmethod
    def bits(self, rows: int, cols: int, active_fraction: float) -> tuple[float, float]:
        """Bits per value (of the whole tensor) this part spends, and the active fraction it leaves."""

    # QuEST's trust radius and clip radius, in units of the per-row RMS (RMS-scaled grids only)
    trust_radius: ClassVar[float | None] = None
    clip_radius: ClassVar[float | None] = None

    def __str__(self) -> str:
        return self.spec


# observe(index, part, x before the part, x̂ after it, active before, active after)
Observer = Callable[[int, Part, torch.Tensor, torch.Tensor, torch.Tensor | None,
                     torch.Tensor | None], None]


@dataclass(frozen=True)
class Format:
    """A compressed representation: a pipeline of parts, optionally Hadamard-rotated.

    ``parse_format(str(f)) == f``. Use :func:`capscale.formats.parse_format` to build one.
    """

    parts: tuple[Part, ...] = ()
    rotation: int | None = None  # Hadamard block size, when rotated

    # --- naming -------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        if not self.parts:
            return "none"
        names = [p.spec for p in self.parts]
        if self.rotation is not None:
            names[-1] += ":had" if self.rotation == 128 else f":had{self.rotation}"
        return "+".join(names)

    def __str__(self) -> str:
        return self.spec

    def __repr__(self) -> str:
        return f"Format({self.spec!r})"

    # --- the representation -------------------------------------------------------------
    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """x̂: the tensor as this format represents it (same shape, dtype and device).

        Each value is rounded once, from the exact quotient by its scale, and the result once
        to the input's dtype (bf16/fp16 inputs are computed in float64). NaN propagates (per
        element; per block for MX and NVFP4, per vector for VQ, per rotation block with
        `:had`); a finite input never gives a non-finite output. Under autograd the gradient
        passes straight through (d x̂ / d x = 1, torchao's fake-quantization convention);
        the trainer's masked gradient rules live in `capscale.model`.
        """
        if not self.parts:
            return x
        if x.numel() == 0:
            return x.clone()
        if torch.is_grad_enabled() and x.requires_grad:
            with torch.no_grad():
                xq = self._quantize(x.detach())
            return _StraightThrough.apply(x, xq)
        return self._quantize(x)

    def _quantize(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        # bf16/fp16 inputs are computed in float64, except by a lone part that rounds them
        # once to their own dtype itself (the scale-then-grid quantizers, NVFP4)
        native = (self.rotation is None and len(self.parts) == 1
                  and getattr(self.parts[0], "native_low_precision", False))
        work = x if dtype in (torch.float32, torch.float64) or native else x.double()
        x2d = work.reshape(1, -1) if work.dim() < 2 else work.reshape(-1, shape[-1])
        block = None
        if self.rotation is not None:
            from capscale.formats.hadamard import effective_block, fwht

            block = effective_block(self.rotation, x2d.shape[-1])
            if x2d.dtype == torch.float32 and bool(x2d.abs().nan_to_num(0.0).amax() > 2.0**100):
                x2d = x2d.double()  # a rotated block sum of huge float32 values would overflow
            x2d = fwht(x2d, block)
        out, _ = self.run_parts(x2d)
        if block is not None:
            out = fwht(out, block)  # the orthonormal Walsh–Hadamard transform is its own inverse
        return saturating_cast(out, dtype).reshape(shape)

    __call__ = quantize

    def run_parts(
        self,
        x2d: torch.Tensor,
        n_parts: int | None = None,
        observe: Observer | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pipeline itself: the first `n_parts` parts (all by default) applied in turn to
        x2d, a (rows, cols) tensor already in the working dtype and, for `:had`, already
        rotated. Returns (x̂, the still-active mask or None). `observe(index, part, before,
        out, active_before, active_after)`, when given, is called after each part, e.g. to
        collect what a gradient rule needs from it."""
        out, active = x2d, None
        for index, part in enumerate(self.parts if n_parts is None else self.parts[:n_parts]):
            before, active_before = out, active
            out, active = part.apply(out, active)
            if observe is not None:
                observe(index, part, before, out, active_before, active)
        return out, active

    # --- storage --------------------------------------------------------------------------
    def bits(self, shape: tuple[int, ...]) -> float:
        """Honest storage bits per value for a tensor of `shape`: codes, scales, masks, indices."""
        cols = int(shape[-1]) if len(shape) else 1
        rows = max(1, math.prod(int(s) for s in shape[:-1]))
        total, active = 0.0, 1.0
        for part in self.parts:
            b, active = part.bits(rows, cols, active)
            total += b
        return total + active * DENSE_BITS

    @property
    def bits_per_value(self) -> float:
        """Bits per value for a 4096 × 4096 tensor (REFERENCE_SHAPE)."""
        return self.bits(REFERENCE_SHAPE)

    # --- what other layers ask of a format ---------------------------------------------
    @property
    def is_identity(self) -> bool:
        return not self.parts

    @property
    def kind(self) -> str:
        """Compression type, for the capacity law: "dense", "scalar", "sparse", "vector",
        "noise", or a "+"-joined combination such as "sparse+scalar"."""
        if not self.parts:
            return "dense"
        kinds: list[str] = []
        for p in self.parts:
            if p.kind not in kinds:
                kinds.append(p.kind)
        return "+".join(kinds)
