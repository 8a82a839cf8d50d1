"""Noise injection: x̂ = x + σ·RMS_row(x)·z with σ² the requested relative MSE.

Not a storage format (it has no bits) but the training proxy of the papers: a representation
whose only property is its GMSE, which is exactly σ² by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from capscale.errors import CapscaleError
from capscale.formats.base import Part, finite_view, robust_rms, saturating_cast


@dataclass(frozen=True)
class NoiseInjection(Part):
    mse: float = 0.01
    distribution: str = "gaussian"  # or "uniform" (variance matched)
    kind = "noise"
    accepted_modifiers = ("gaussian", "uniform", "had")

    def __post_init__(self):
        if not self.mse > 0:
            raise CapscaleError(f"noise{self.mse}: the relative MSE must be positive")

    @property
    def spec(self):
        return f"noise{self.mse!r}" + (":uniform" if self.distribution == "uniform" else "")

    def apply(self, x2d, active):
        rows, cols = x2d.shape
        av = None if active is None else active.reshape(rows, 1, cols)
        clean, stat, nonfinite = finite_view(x2d.reshape(rows, 1, cols), av)
        rms = robust_rms(clean.double(), stat).reshape(rows, 1)  # over the finite entries
        if self.distribution == "uniform":
            z = (torch.rand_like(x2d) * 2 - 1) * math.sqrt(3.0)
        else:
            z = torch.randn_like(x2d)
        out = saturating_cast(x2d.double() + z * (math.sqrt(self.mse) * rms), x2d.dtype)
        if nonfinite is not None:
            out = torch.where(nonfinite.reshape(rows, cols), x2d, out)
        if active is not None:
            out = torch.where(active, out, x2d)
        return out, None

    def bits(self, rows, cols, active_fraction):
        return float("nan"), 0.0
