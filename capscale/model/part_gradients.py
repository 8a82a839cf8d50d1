"""How gradients pass through each part of a format, keyed by part type.

A compressed operand runs its format's parts in turn; each part picks the rule it really
uses (``rule``: "ste", "trust", "clip1.3", "fw", "b-rms", "exact", "lsq", ...) and contributes
a backward mask (``mask``); :class:`~capscale.model.compressed_linear.OperandCompressor`
multiplies the masks. Entries are looked up along the part's class hierarchy, so a new
format family registers its own entry with :func:`register_part_gradient` and needs no edit
here. A part type without an entry uses the trust and clip rules of the grid it declares
(``rms_grid``, levels in units of the per-row RMS, as user formats registered with ``grid=``
do) and passes its gradient straight through otherwise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from capscale.errors import CapscaleError
from capscale.formats.base import Part, group_view, masked_rms
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import ScalarQuantizer
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers
from capscale.formats.vq import VectorQuantizer, gaussian_codebook
from capscale.model.gradient_rules import (
    GradRule,
    clip_mask,
    sparse_backward_mask,
    trust_mask,
    vector_trust_mask,
)
from capscale.model.learned_scale import LEARNED_RULES

# mask(part, rule, grad_rule, x, x̂, active before, active after) -> bool mask or None
Mask = Callable[[Part, str, GradRule, torch.Tensor, torch.Tensor, torch.Tensor | None,
                 torch.Tensor | None], torch.Tensor | None]


@dataclass(frozen=True)
class PartGradient:
    """The gradient of one part type: ``rule(part, grad_rule)`` names the rule it uses (and
    raises CapscaleError when the rule does not fit it); ``mask`` is its backward mask (None:
    no mask). ``learned`` says what a learned-scale rule (lsq, lsq+, pact) does with it:
    "learn" (its scale is the one learned), "keep" (it may precede the learned quantizer,
    with its own mask) or "fixed" (its scales are fixed by its own rules: refused)."""

    rule: Callable[[Part, GradRule], str]
    mask: Mask | None = None
    learned: str = "fixed"


_GRADIENTS: dict[type, PartGradient] = {}


def register_part_gradient(part_type: type, rule: Callable[[Part, GradRule], str],
                           mask: Mask | None = None, *, learned: str = "fixed") -> None:
    """Say how gradients pass through parts of ``part_type`` (and its subclasses)."""
    if not (isinstance(part_type, type) and issubclass(part_type, Part)):
        raise CapscaleError(f"register_part_gradient: {part_type!r} is not a Part subclass")
    if learned not in ("learn", "keep", "fixed"):
        raise CapscaleError(f"register_part_gradient: learned={learned!r}; use learn, keep or fixed")
    _GRADIENTS[part_type] = PartGradient(rule, mask, learned)


def part_gradient(part: Part) -> PartGradient:
    """The entry of the part's type or its nearest registered base; the declared-grid default."""
    for cls in type(part).__mro__:
        entry = _GRADIENTS.get(cls)
        if entry is not None:
            return entry
    return DECLARED_GRID


# --------------------------------------------------------------------------- scalar grids


def _scalar_rule(part, r: GradRule) -> str:
    if r.quant in LEARNED_RULES:
        return r.quant
    if r.quant == "trust" and len(part.levels) == 2:
        return f"clip{r.one_bit_clip_scale:g}"  # QuEST: the clip variant at one bit
    if r.quant == "clip":
        return f"clip{r.clip_scale:g}"
    return r.quant


def _scalar_mask(part, rule, r, x, xq, active, keep):
    if rule == "ste":
        return None
    xv = group_view(x, part.scaling.group, part.spec)
    av = None if active is None else group_view(active, part.scaling.group, part.spec)
    qv = xq.reshape(xv.shape)
    s = part.scale(xv, av)  # where the outermost level sits, per group
    if rule.startswith("clip"):
        m = clip_mask(xv, float(rule[4:]) * s)
    elif r.trust_radius is not None:
        m = trust_mask(xv, qv, r.trust_radius, masked_rms(xv, av))
    else:
        # QuEST's default radius, half the widest gap of the scaled grid: rounding to
        # nearest errs by less inside the grid's range [-s, s], and by |x| - s beyond
        # it, so |x̂ - x| <= gap/2 is the same as |x| <= s (1 + gap/2) (one pass less)
        half_gap = float(max(part.levels[1:] - part.levels[:-1])) / 2
        m = xv.abs() <= s * (1.0 + half_gap)
    m = m.reshape(x.shape)
    return m if active is None else m | ~active  # inactive entries pass unchanged


# --------------------------------------------------------------------------- sparsity


def _magnitude_mask(part, rule, r, x, xq, active, keep):
    if rule == "ste":
        return None
    dim = -1 if part.per_row else None
    return sparse_backward_mask(x, keep, rule, r.sparse_p, r.sparse_area, dim)


def _nm_rule(part, r: GradRule) -> str:
    if r.sparse not in ("fw", "ste"):
        raise CapscaleError(
            f"sparse backward mask {r.sparse!r} is defined for magnitude (top-k) "
            f"sparsity; {part.spec} is N:M: use fw or ste"
        )
    return r.sparse


def _nm_mask(part, rule, r, x, xq, active, keep):
    return None if rule == "ste" else keep  # rule is "fw"


# --------------------------------------------------------------------------- vectors


def _vector_mask(part, rule, r, x, xq, active, keep):
    if rule == "ste":
        return None
    book = gaussian_codebook(part.dim, part.n_bits)
    radius = float(book.square().sum(1).sqrt().max())  # the sphere holding the code book
    scale = masked_rms(x.unsqueeze(1), None).squeeze(1)
    return vector_trust_mask(x, part.dim, radius * scale)


# --------------------------------------------------------------------------- declared grids


def _declared_rule(part, r: GradRule) -> str:
    grid = getattr(part, "rms_grid", None)
    if grid is None or r.quant == "ste":
        # Block formats (MX, NVFP4) have power-of-two shared scales with no RMS to measure a
        # trust region against, and a function without a declared grid has no levels: their
        # gradient passes straight through.
        return "ste"
    if r.quant == "clip":
        return f"clip{r.clip_scale:g}"
    if r.quant == "trust":
        return f"clip{r.one_bit_clip_scale:g}" if len(grid) == 2 else "trust"
    return "ste"  # learned-scale rules are refused before this (learned="fixed")


def _declared_mask(part, rule, r, x, xq, active, keep):
    if rule == "ste":
        return None
    rms = masked_rms(x.unsqueeze(1), None if active is None else active.unsqueeze(1)).squeeze(1)
    if rule.startswith("clip"):
        m = clip_mask(x, float(rule[4:]) * part.clip_radius * rms)
    else:
        radius = r.trust_radius if r.trust_radius is not None else part.trust_radius
        m = trust_mask(x, xq, radius, rms)
    return m if active is None else m | ~active


DECLARED_GRID = PartGradient(_declared_rule, _declared_mask, "fixed")

register_part_gradient(ScalarQuantizer, _scalar_rule, _scalar_mask, learned="learn")
register_part_gradient(MagnitudeSparsity, lambda p, r: r.sparse, _magnitude_mask, learned="keep")
register_part_gradient(NMSparsity, _nm_rule, _nm_mask, learned="keep")
register_part_gradient(Outliers, lambda p, r: "exact", None, learned="keep")
register_part_gradient(NoiseInjection, lambda p, r: "ste", None, learned="keep")
register_part_gradient(VectorQuantizer, lambda p, r: r.vector, _vector_mask)
