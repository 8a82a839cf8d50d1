"""A plugin of user formats, as a user would write one: a 10-line function and a Part.

Loaded with ``--plugin tests/formats/user_formats.py`` (or imported)."""

from dataclasses import dataclass

import torch

import capscale.formats as cf

E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def myfp4(x):
    """FP4 E2M1 with an absmax scale per row (the largest |x| maps to 6)."""
    scale = x.abs().amax(dim=-1, keepdim=True) / 6
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    grid = torch.tensor(E2M1, dtype=x.dtype, device=x.device)
    y = (x / scale).abs().clamp(max=6)
    nearest = (y.unsqueeze(-1) - grid).abs().argmin(dim=-1)
    return torch.sign(x) * grid[nearest] * scale


cf.register("myfp4", myfp4, bits=lambda shape: 4 + 16 / shape[-1])


@dataclass(frozen=True)
class SignMean(cf.Part):
    """1 bit per value: x̂ = sign(x) · mean |x| of the row's active entries (+ a 16-bit scale)."""

    spec = "signmean"

    def apply(self, x2d, active):
        a = x2d.abs() if active is None else torch.where(active, x2d.abs(), torch.zeros_like(x2d))
        n = x2d.shape[-1] if active is None else active.sum(-1, keepdim=True).clamp(min=1)
        out = torch.sign(x2d) * (a.sum(-1, keepdim=True) / n)
        return (out if active is None else torch.where(active, out, x2d)), None

    def bits(self, rows, cols, active_fraction):
        return active_fraction * 1.0 + 16 / cols, 0.0


cf.register("signmean", SignMean)
