"""Learned-scale quantizers, the baselines QuEST is measured against: LSQ, LSQ+ and PACT.

QuEST's trust estimation fixes where the grid sits (α*·RMS) and masks gradients; these
methods instead make the scale a parameter the optimizer trains. They share the formats'
grids: a scalar format's levels are normalised to [−1, 1], and what is learned is where the
outermost level sits, S, per tensor or per group of the format (per output channel for the
default ``row`` scope). Activations get one learned scale per tensor, the only static choice
(a per-token scale cannot be learned).

* LSQ (Esser et al. 2020, arXiv 1902.08153) learns the step s = S / Q_P with
  Q_P = (L − 1)/2 for a grid of L levels. On a uniform grid s is the gap and the level
  indices run over ±Q_P (QuEST's INT-b grid: Q_P = 2^(b−1) − ½; the grid with a zero level:
  2^(b−1) − 1, LSQ's own signed grid). x̂ = s·q with q = round(clamp(x/s, −Q_P, Q_P)) to the
  grid; ∂x̂/∂x = 1 inside the range and 0 outside; ∂x̂/∂s = q − x/s inside, ±Q_P outside; the
  step's gradient is scaled by g = 1/√(N·Q_P), N the number of values sharing the step (the
  row length per channel, the values per token for activations, since the loss averages
  over tokens). Initialised at s = 2·mean|x|/√Q_P on the first tensor seen.
* LSQ+ (Bhalgat et al. 2020, arXiv 2004.09576) adds a learned offset β to the activation
  quantizer, x̂ = s·q((x − β)/s) + β, with ∂x̂/∂β = 0 inside the range and 1 outside, scaled
  by the same g. Weights stay symmetric as in the paper, with its initialisation
  s = max(|μ − 3σ|, |μ + 3σ|) / 2^(b−1) (2^(b−1) = L/2 levels a side); activations start
  from the range of the first batch: s = (max − min)/(L − 1), β = (max + min)/2.
* PACT (Choi et al. 2018, arXiv 1805.06085) learns the clipping value α = S: x̂ is the grid
  on [−α, α] (signed, because the operands of these layers are); ∂x̂/∂x = 1 for |x| ≤ α and
  0 beyond; ∂x̂/∂α = sign(x) beyond the clip and 0 inside (rounding passes straight through,
  so the quantization error inside does not move α). The paper starts α at 10 for
  batch-normalised ReLU outputs, a constant that means nothing for RMS-normalised inputs or
  for weights, and relies on an L2 penalty to shrink it; with no penalty here (the scale is
  not decayed) α starts where the format's own scale rule puts the outermost level.

Scales are initialised from the first tensor each quantizer sees (averaged over processes
under torch.distributed, so ranks agree) and a buffer records that, so a resumed run keeps
its learned scales.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from capscale.errors import CapscaleError
from capscale.formats.base import group_view, masked_rms
from capscale.formats.scalar import ScalarQuantizer
from capscale.model.presets import LEARNED_RULES


def grad_scale(t: torch.Tensor, g: float) -> torch.Tensor:
    """t in the forward pass; its gradient multiplied by g in the backward pass."""
    return (t - t * g).detach() + t * g


def lsq_quantize(x, step, q_p, round_normalised, offset=None, g: float = 1.0):
    """LSQ (LSQ+ with ``offset``): s·round(clamp((x − β)/s, ±Q_P)) + β, with the paper's
    gradients to x, the step s and the offset β (both scaled by g).

    ``round_normalised`` maps values in [−1, 1] to the nearest level of the normalised grid
    (outermost level at ±1); ``step`` and ``offset`` broadcast against x.
    """
    outer = grad_scale(step, g) * q_p  # where the outermost level sits
    beta = 0.0 if offset is None else grad_scale(offset, g)
    y = ((x - beta) / outer).clamp(-1.0, 1.0)
    q = round_normalised(y.detach())
    return outer * (y + (q - y).detach()) + beta


def pact_quantize(x, clip, round_normalised):
    """PACT: the grid on [−α, α]; the gradient reaches x inside the clip and α beyond it."""
    clipped = torch.minimum(torch.maximum(x, -clip), clip)
    a = clip.detach()
    safe = torch.where(a > 0, a, torch.ones_like(a))
    q = round_normalised(x.detach() / safe) * a
    return clipped + (q - clipped).detach()


def _masked_mean(t: torch.Tensor, av: torch.Tensor | None) -> torch.Tensor:
    if av is None:
        return t.mean(dim=-1, keepdim=True)
    zero = torch.zeros((), dtype=t.dtype, device=t.device)
    count = av.sum(dim=-1, keepdim=True).clamp(min=1)
    return torch.where(av, t, zero).sum(dim=-1, keepdim=True) / count


def _masked_extremes(xv: torch.Tensor, av: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if av is None:
        return xv.amin(dim=-1, keepdim=True), xv.amax(dim=-1, keepdim=True)
    inf = torch.tensor(float("inf"), dtype=xv.dtype, device=xv.device)
    lo = torch.where(av, xv, inf).amin(dim=-1, keepdim=True)
    hi = torch.where(av, xv, -inf).amax(dim=-1, keepdim=True)
    return torch.nan_to_num(lo, posinf=0.0), torch.nan_to_num(hi, neginf=0.0)


class LearnedScale(nn.Module):
    """The learned scale (and LSQ+'s offset) of one operand of one layer, and the quantizer
    that uses it. Parameters: ``step`` (LSQ, LSQ+: the step; PACT: the clip α), ``offset``."""

    counts_as_model_parameters = False  # quantizer metadata: not part of the N of the laws

    def __init__(self, rule: str, part: ScalarQuantizer, role: str, shape: tuple[int, int]):
        super().__init__()
        if rule not in LEARNED_RULES:
            raise CapscaleError(f"unknown learned-scale rule {rule!r}: use one of {', '.join(LEARNED_RULES)}")
        self.rule, self.part, self.role = rule, part, role
        # weights keep the format's groups; activations share one scale per tensor
        self.group = part.scaling.group if role == "weight" else "tensor"
        rows, cols = shape
        view = group_view(torch.empty(rows, cols, device="meta"), self.group, part.spec).shape
        self.per_scale = view[-1] if role == "weight" else cols  # N of LSQ's gradient scale
        n_levels = len(part.levels)
        self.q_p = (n_levels - 1) / 2
        self.half_levels = n_levels / 2
        self.g = 1.0 / math.sqrt(self.per_scale * self.q_p) if rule != "pact" else 1.0
        self.step = nn.Parameter(torch.ones(view[0], view[1], 1))
        self.offset = (nn.Parameter(torch.zeros(view[0], view[1], 1))
                       if rule == "lsq+" and role == "activation" else None)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._ready = False  # mirrors `initialized` without reading it (a GPU sync) every call

    @property
    def label(self) -> str:
        """The rule as the run record shows it, e.g. "int4:lsq" or "int4:lsq(tensor)"."""
        scope = "" if self.group == self.part.scaling.group else "(tensor)"
        return f"{self.part.spec}:{self.rule}{scope}"

    def forward(self, x2d: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        xv = group_view(x2d, self.group, self.part.spec)
        av = None if active is None else group_view(active, self.group, self.part.spec)
        if not self._ready:
            if not bool(self.initialized):
                self._initialise(xv.detach(), av)
            self._ready = True
        round_normalised = self.part.round_normalised
        if self.rule == "pact":
            q = pact_quantize(xv, self.step, round_normalised)
        else:
            q = lsq_quantize(xv, self.step, self.q_p, round_normalised, self.offset, self.g)
        if av is not None:
            q = torch.where(av, q, xv)
        return q.reshape(x2d.shape)

    def _load_from_state_dict(self, *args, **kwargs):
        self._ready = False  # look at the loaded `initialized` flag on the next call
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _initialise(self, xv: torch.Tensor, av: torch.Tensor | None) -> None:
        xv = xv.float()
        offset = None
        if self.rule == "pact":
            step = self.part.scale(xv, av)
        elif self.rule == "lsq" or self.role == "weight":
            if self.rule == "lsq":
                step = 2 * _masked_mean(xv.abs(), av) / math.sqrt(self.q_p)
            else:
                mu = _masked_mean(xv, av)
                sigma = masked_rms(xv - mu, av)
                step = torch.maximum((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs()) / self.half_levels
        else:  # LSQ+ activations: the range of the first batch
            lo, hi = _masked_extremes(xv, av)
            step = (hi - lo) / (2 * self.q_p)
            offset = (hi + lo) / 2
        step = step.clamp(min=torch.finfo(torch.float32).tiny)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for t in (step, offset):
                if t is not None:
                    torch.distributed.all_reduce(t)
                    t /= torch.distributed.get_world_size()
        self.step.copy_(step.expand_as(self.step))
        if offset is not None:
            self.offset.copy_(offset.expand_as(self.offset))
        self.initialized.fill_(True)

    def extra_repr(self) -> str:
        return f"{self.label}, scales={tuple(self.step.shape[:2])}"
