"""Sparsity and outliers: parts that decide some entries and leave the rest to later parts.

Magnitude sparsity keeps the largest |x| (per tensor or per row) and zeroes the rest; N:M
keeps the N largest of every M consecutive values of a row (":pairs" ranks consecutive
pairs by their L2 norm, as QuEST's 4:8 mask does); outliers keep the largest |x| exactly and
leave the rest (the inliers) active for the quantizer that follows, whose scale statistics
are then taken over the inliers only.

Storage: an unstructured mask costs one bit per value (a bitmap); an N:M pattern costs
⌈log2 C(M, N)⌉ bits per group (the index of the pattern); an outlier costs a bf16 value and
a 32-bit position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from capscale.errors import CapscaleError
from capscale.formats.base import DENSE_BITS, Part


def keep_largest(score: torch.Tensor, n_keep: torch.Tensor | int) -> torch.Tensor:
    """Boolean mask of the `n_keep` largest scores of each row (ties broken by position), exact.

    `score` is (rows, n); `n_keep` an int or a (rows, 1) tensor. Uses a k-th value threshold
    (O(n)) rather than a full sort.
    """
    rows, n = score.shape
    n_keep_t = torch.as_tensor(n_keep, device=score.device).expand(rows, 1) if not torch.is_tensor(n_keep) else n_keep
    n_keep_t = n_keep_t.to(torch.long).clamp(0, n)
    # threshold = the (n - k)-th smallest, i.e. the k-th largest; rows with k = 0 keep nothing
    kth = (n - n_keep_t).clamp(min=1)
    if int(kth.min()) == int(kth.max()):
        thr = score.kthvalue(int(kth[0, 0]), dim=1, keepdim=True).values
    else:  # per-row k (rows with different active counts): fall back to a sort
        thr = score.sort(dim=1).values.gather(1, kth - 1)
    keep = score > thr
    deficit = n_keep_t - keep.sum(dim=1, keepdim=True)
    if bool((deficit > 0).any()):  # ties at the threshold: take the first ones by position
        tie = score == thr
        rank = tie.cumsum(dim=1)
        keep |= tie & (rank <= deficit)
    return keep & (n_keep_t > 0)


def _magnitude(x: torch.Tensor) -> torch.Tensor:
    """|x| as a ranking score, NaN ranked with +inf (a NaN is kept, so it propagates)."""
    return torch.nan_to_num(x.abs(), nan=math.inf, posinf=math.inf)


def _scored_scopes(x2d, active, per_row: bool):
    """Magnitudes as one row per selection scope (each row, or the whole tensor), the
    inactive ones at -inf, and how many entries of each scope are active."""
    score = _neg_inf_where_inactive(_magnitude(x2d), active)
    view = score if per_row else score.reshape(1, -1)
    if active is None:
        return view, torch.full((view.shape[0], 1), view.shape[1], device=x2d.device)
    return view, (active if per_row else active.reshape(1, -1)).sum(dim=1, keepdim=True)


def _neg_inf_where_inactive(score: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
    if active is None:
        return score
    return torch.where(active, score, torch.full((), -math.inf, dtype=score.dtype, device=score.device))


@dataclass(frozen=True)
class MagnitudeSparsity(Part):
    """Prune the fraction `sparsity` of the active entries with the smallest |x|."""

    sparsity: float = 0.5
    per_row: bool = False
    terminal = False
    kind = "sparse"
    accepted_modifiers = ("row", "tensor")

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise CapscaleError(f"sparse{self.sparsity}: sparsity must be in [0, 1)")

    @property
    def spec(self):
        return f"sparse{self.sparsity!r}" + (":row" if self.per_row else "")

    def apply(self, x2d, active):
        rows, cols = x2d.shape
        view, n_active = _scored_scopes(x2d, active, self.per_row)
        n_keep = n_active - torch.round(n_active * self.sparsity).to(torch.long)
        keep = keep_largest(view, n_keep).reshape(rows, cols)
        if active is not None:
            keep &= active
            out = torch.where(active & ~keep, torch.zeros((), dtype=x2d.dtype, device=x2d.device), x2d)
        else:
            out = torch.where(keep, x2d, torch.zeros((), dtype=x2d.dtype, device=x2d.device))
        return out, keep

    def bits(self, rows, cols, active_fraction):
        return active_fraction * 1.0, active_fraction * (1.0 - self.sparsity)


@dataclass(frozen=True)
class NMSparsity(Part):
    """Keep the `n` largest of every `m` consecutive units of a row (a unit is one value, or a
    pair of values ranked by L2 norm with `pairs`)."""

    n: int = 2
    m: int = 4
    pairs: bool = False
    terminal = False
    kind = "sparse"
    accepted_modifiers = ("pairs",)

    def __post_init__(self):
        if not 0 < self.n <= self.m:
            raise CapscaleError(f"{self.n}:{self.m}: N:M sparsity needs 0 < N <= M")

    @property
    def spec(self):
        return f"{self.n}:{self.m}" + (":pairs" if self.pairs else "")

    @property
    def unit(self) -> int:
        return 2 if self.pairs else 1

    def apply(self, x2d, active):
        rows, cols = x2d.shape
        span = self.m * self.unit
        if cols % span:
            raise CapscaleError(
                f"{self.spec}: needs the last dimension ({cols}) to be a multiple of {span}"
            )
        xa = x2d if active is None else torch.where(active, x2d, torch.zeros((), dtype=x2d.dtype, device=x2d.device))
        units = xa.reshape(rows, cols // span, self.m, self.unit)
        score = _magnitude(units).square().sum(dim=-1)  # (rows, groups, m); NaN ranks first
        idx = score.topk(self.n, dim=-1).indices
        keep_units = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, idx, True)
        keep = keep_units.unsqueeze(-1).expand_as(units).reshape(rows, cols)
        if active is not None:
            keep = keep & active
            out = torch.where(active & ~keep, torch.zeros((), dtype=x2d.dtype, device=x2d.device), x2d)
        else:
            out = torch.where(keep, x2d, torch.zeros((), dtype=x2d.dtype, device=x2d.device))
        return out, keep

    def bits(self, rows, cols, active_fraction):
        pattern_bits = math.ceil(math.log2(math.comb(self.m, self.n))) if self.n < self.m else 0
        return pattern_bits / (self.m * self.unit), active_fraction * self.n / self.m


@dataclass(frozen=True)
class Outliers(Part):
    """Keep the fraction `fraction` of active entries with the largest |x| exactly (bf16
    value + 32-bit index each); the rest stay active for the next part."""

    fraction: float = 0.01
    per_row: bool = False
    terminal = False
    kind = "outliers"
    accepted_modifiers = ("row", "tensor")
    INDEX_BITS = 32

    def __post_init__(self):
        if not 0.0 <= self.fraction < 1.0:
            raise CapscaleError(f"outliers{self.fraction}: the outlier fraction must be in [0, 1)")

    @property
    def spec(self):
        return f"outliers{self.fraction!r}" + (":row" if self.per_row else "")

    def apply(self, x2d, active):
        rows, cols = x2d.shape
        view, n_active = _scored_scopes(x2d, active, self.per_row)
        n_out = torch.round(n_active * self.fraction).to(torch.long)
        outlier = keep_largest(view, n_out).reshape(rows, cols)
        inlier = ~outlier if active is None else active & ~outlier
        return x2d, inlier

    def bits(self, rows, cols, active_fraction):
        kept = active_fraction * self.fraction
        return kept * (DENSE_BITS + self.INDEX_BITS), active_fraction - kept
