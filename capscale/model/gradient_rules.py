"""Gradient rules for training through a compressed representation.

The forward pass uses x̂ = C(x); the backward pass passes the incoming gradient through
unchanged (the straight-through estimator, STE) except where a *mask* says the
compressed value should not be trusted. Every rule here is such a mask, computed in the
forward pass from x and x̂ and applied to the gradient in the backward pass:

* ``ste`` — no mask.
* ``trust`` — QuEST's trust estimation (Panferov et al. 2025, arXiv 2502.05003): zero the
  gradient where |x̂ − x| exceeds the trust radius times the RMS scale, by default half a
  quantization step of the RMS-normalised grid, so that only values the grid can
  represent up to rounding pass gradient. At one bit the papers use the clip variant with
  scale 1.3 instead, and so does this rule. Grids scaled by their absmax or an MSE-searched
  clip use half the widest gap of the scaled grid; block formats with power-of-two shared
  scales (MX, NVFP4) have no such radius and pass gradients straight through.
* ``clip`` — zero the gradient where |x| lies beyond ``clip_scale`` times the outermost
  grid level (QuEST's ClipQuantizer).
* ``lsq``, ``lsq+``, ``pact`` — the learned-scale baselines: the scale of the scalar grid is
  a parameter trained by the optimizer (see :mod:`capscale.model.learned_scale`).
* Sparse masks (unified paper, arXiv 2506.01863, Sec. 5.2 and App. F.3) for magnitude
  top-k sparsity with forward mask M_FW = |x| ≥ T_k: ``fw`` (backward mask = forward
  mask), ``rms`` (|x| > T_p with T_p = RMS(x)·Φ⁻¹(0.5 + p)), ``b-rms`` (RBBM: gradient
  for |x| < min(T_p, T_k) or |x| ≥ max(T_p, T_k), none inside the band) and ``a-b-rms``
  (the band [T_a, T_k] covers a fraction ``a`` of the Gaussian mass between the median
  and T_k, so it can never invert). ``ste`` lets every pruned weight receive gradient.
* Vector quantization: ``trust`` zeros the gradient of every d-dimensional point lying
  outside the hypersphere that holds the codebook (unified paper, App. D).

The functions are pure tensor functions so that tests can check them against values
worked out by hand.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from capscale.errors import CapscaleError
from capscale.model.presets import HADAMARD_MODES, QUANT_RULES, SPARSE_RULES, VECTOR_RULES


@dataclass(frozen=True)
class GradRule:
    """How gradients pass through the compressed operands of a layer.

    quant: rule for scalar quantization ("ste" | "trust" | "clip"), or a learned scale
        ("lsq" | "lsq+" | "pact").
    trust_radius: override of the trust radius in RMS units (None: the format's own,
        half the widest gap between adjacent levels of its RMS-normalised grid).
    clip_scale: for "clip", the multiple of the outermost level beyond which gradients stop.
    one_bit_clip_scale: "trust" on a 1-bit grid becomes "clip" with this scale (QuEST: 1.3).
    hadamard: "full" quantizes in the rotated domain and rotates back, so the layer computes
        C(xH)·C(WH)ᵀ = x̂·ŵᵀ; "half" keeps a rotated operand in the rotated domain and does
        not rotate an uncompressed partner (QuEST's HalfHadamard: weight-only rotation
        becomes a reparametrisation with no rotation at inference). With both operands
        rotated the two modes compute the same function.
    sparse: backward mask of magnitude sparsity ("fw" | "ste" | "rms" | "b-rms" | "a-b-rms").
    sparse_p: median deviation p in (0, 0.5) for "rms" and "b-rms".
    sparse_area: band area a in [0, 1] for "a-b-rms".
    vector: rule for vector quantization ("trust" | "ste").
    """

    quant: str = "trust"
    trust_radius: float | None = None
    clip_scale: float = 1.0
    one_bit_clip_scale: float = 1.3
    hadamard: str = "full"
    sparse: str = "fw"
    sparse_p: float = 0.2
    sparse_area: float = 0.5
    vector: str = "trust"

    def __post_init__(self) -> None:
        _check_choice("gradient rule", self.quant, QUANT_RULES)
        _check_choice("sparse backward mask", self.sparse, SPARSE_RULES)
        _check_choice("vector-quantization rule", self.vector, VECTOR_RULES)
        _check_choice("Hadamard mode", self.hadamard, HADAMARD_MODES)
        if self.trust_radius is not None and not self.trust_radius > 0:
            raise CapscaleError(f"trust radius {self.trust_radius}: must be > 0 (RMS units)")
        if not self.clip_scale > 0 or not self.one_bit_clip_scale > 0:
            raise CapscaleError("clip scales must be > 0")
        if not 0.0 < self.sparse_p < 0.5:
            raise CapscaleError(f"sparse median deviation p={self.sparse_p}: must lie in (0, 0.5)")
        if not 0.0 <= self.sparse_area <= 1.0:
            raise CapscaleError(f"sparse band area a={self.sparse_area}: must lie in [0, 1]")

    @classmethod
    def parse(cls, rule: GradRule | str | None, **overrides) -> GradRule:
        """A GradRule from a rule name ("ste", "trust", "clip", "lsq", ...) plus keyword overrides."""
        if isinstance(rule, GradRule):
            return GradRule(**{**asdict(rule), **overrides}) if overrides else rule
        return cls(quant=(rule or "trust").strip().lower(), **overrides)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CapscaleError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")


# --------------------------------------------------------------------------- scales


def rms(x: torch.Tensor, dim: int | None = -1) -> torch.Tensor:
    """Root mean square over ``dim`` (keepdim), or over the whole tensor when dim is None."""
    if dim is None:
        return x.float().pow(2).mean().sqrt().to(x.dtype)
    return x.float().pow(2).mean(dim, keepdim=True).sqrt().to(x.dtype)


# --------------------------------------------------------------------------- scalar masks


def trust_mask(x: torch.Tensor, xq: torch.Tensor, radius: float, scale: torch.Tensor) -> torch.Tensor:
    """True where |x̂ − x| ≤ radius · scale (QuEST's trust region)."""
    return (xq - x).abs() <= radius * scale


def clip_mask(x: torch.Tensor, limit: torch.Tensor | float) -> torch.Tensor:
    """True where |x| ≤ limit (QuEST's clip mask; limit = clip_scale · outermost level)."""
    return x.abs() <= limit


# --------------------------------------------------------------------------- sparse masks


def _normal_ppf(q: torch.Tensor | float) -> torch.Tensor:
    return torch.special.ndtri(torch.as_tensor(q, dtype=torch.float64))


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(z.double())


def topk_threshold(x: torch.Tensor, keep: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """T_k: the smallest magnitude among the kept entries (per tensor, or per row with dim=-1)."""
    big = torch.finfo(x.dtype).max
    masked = torch.where(keep, x.abs(), torch.full_like(x, big))
    if dim is None:
        return masked.min()
    return masked.amin(dim=dim, keepdim=True)


def sparse_backward_mask(
    x: torch.Tensor,
    keep: torch.Tensor,
    rule: str,
    p: float = 0.2,
    area: float = 0.5,
    dim: int | None = None,
) -> torch.Tensor | None:
    """Backward mask of magnitude top-k sparsity (unified paper, App. F.3).

    ``keep`` is the forward mask M_FW (True for kept entries); ``dim`` is None for per-tensor
    thresholds and -1 for per-row ones. Returns None for "ste" (every entry gets gradient).
    """
    if rule == "ste":
        return None
    if rule == "fw":
        return keep
    a = x.abs()
    scale = rms(x, dim).double()
    if rule == "rms":
        t_p = (scale * _normal_ppf(0.5 + p)).to(x.dtype)
        return a > t_p
    t_k = topk_threshold(x, keep, dim)
    if rule == "b-rms":
        t_p = (scale * _normal_ppf(0.5 + p)).to(x.dtype)
        lo, hi = torch.minimum(t_p, t_k), torch.maximum(t_p, t_k)
        return (a < lo) | (a >= hi)
    if rule == "a-b-rms":
        # T_a = RMS · Φ⁻¹(0.5 + (1 − a)(Φ(T_k / RMS) − 0.5)): the band [T_a, T_k] holds a
        # fraction `a` of the Gaussian mass between the median and T_k. (The appendix text
        # says a = 0 gives "fw"; by its own formula a = 0 gives T_a = T_k, no band, and
        # a = 1 gives T_a = 0, i.e. "fw". We follow the formula and the stated meaning of a
        # as the area of the band without gradient.)
        safe = torch.clamp(scale, min=torch.finfo(torch.float64).tiny)
        q = 0.5 + (1.0 - area) * (_normal_cdf(t_k.double() / safe) - 0.5)
        t_a = (scale * torch.special.ndtri(q)).to(x.dtype)
        return (a < t_a) | (a >= t_k)
    raise CapscaleError(f"unknown sparse backward mask {rule!r}: use one of {', '.join(SPARSE_RULES)}")


# --------------------------------------------------------------------------- vector masks


def vector_trust_mask(x: torch.Tensor, dim: int, radius: torch.Tensor) -> torch.Tensor:
    """True for entries of d-dimensional points (consecutive groups of ``dim`` along the last
    axis) whose Euclidean norm is at most ``radius`` (broadcast per row)."""
    shape = x.shape
    points = x.reshape(*shape[:-1], shape[-1] // dim, dim)
    inside = points.float().pow(2).sum(-1, keepdim=True) <= radius.float().unsqueeze(-1) ** 2
    return inside.expand_as(points).reshape(shape)


# --------------------------------------------------------------------------- autograd


class MaskedStraightThrough(torch.autograd.Function):
    """Returns x̂ in the forward pass; passes grad·mask (or grad, with no mask) to x."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, xq: torch.Tensor, mask: torch.Tensor | None):  # noqa: D102
        ctx.has_mask = mask is not None
        if mask is not None:
            ctx.save_for_backward(mask)
        return xq

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        if ctx.has_mask:
            (mask,) = ctx.saved_tensors
            grad = torch.where(mask, grad, torch.zeros((), dtype=grad.dtype, device=grad.device))
        return grad, None, None


def straight_through(x: torch.Tensor, xq: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """x̂ forward, masked identity backward. ``xq`` and ``mask`` must carry no graph."""
    if not x.requires_grad:
        return xq
    return MaskedStraightThrough.apply(x, xq, mask)
