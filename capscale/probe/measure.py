"""Formats on real tensors beside Gaussian ones.

For every tensor and format: the relative MSE ‖x̂ − x‖² / ‖x‖², the effective bits
log_{1/4} MSE (the unified paper's coordinate), the ratio to the format's GMSE, and the
relative MSE of a Gaussian tensor *of the same shape* (one seeded draw), which separates what
the tensor's distribution does from what its shape does (per-row scales of a 64-wide row,
groups, top-k). Tails: kurtosis (3 for a Gaussian) and max |x| / RMS.

Over the model (each value counts once: the per-tensor relative MSEs averaged with weights
proportional to the tensor's size) the formats are ranked on the real tensors and on the
same-shape Gaussian tensors, and each pair of formats whose order differs is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd
import torch

from capscale.capacity import gmse, log_quarter
from capscale.errors import CapscaleError
from capscale.formats import parse_format
from capscale.probe.tensors import ProbeTensor

# a pair is a disagreement only when both orders are clear: each gap above this fraction
MIN_GAP = 0.02


@dataclass
class ProbeResult:
    tensors: pd.DataFrame  # one row per tensor and format
    layer_types: pd.DataFrame  # one row per layer type and format
    summary: pd.DataFrame  # one row per format: real vs Gaussian, ranks
    disagreements: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # (tensor, format) pairs a format cannot take


def tails(x: torch.Tensor) -> tuple[float, float]:
    """(kurtosis, max |x| / RMS) of a tensor, in float64."""
    v = x.double().reshape(-1)
    rms = float(v.square().mean().sqrt())
    c = v - v.mean()
    var = float(c.square().mean())
    kurt = float(c.pow(4).mean() / var**2) if var > 0 else math.nan
    return kurt, (float(v.abs().max()) / rms if rms > 0 else math.nan)


def relative_mse(fmt, x: torch.Tensor) -> float:
    energy = float(x.double().square().sum())
    if energy == 0:
        return math.nan
    return float((fmt.quantize(x).double() - x.double()).square().sum()) / energy


def _gaussian_like(shape, cache: dict, seed: int) -> torch.Tensor:
    if shape not in cache:
        gen = torch.Generator().manual_seed(seed + hash(shape) % 100_003)
        cache[shape] = torch.randn(shape, generator=gen)
    return cache[shape]


def probe(tensors: list[ProbeTensor], formats: list[str], seed: int = 0,
          gmse_rel_err: float = 1e-3) -> ProbeResult:
    """Measure ``formats`` on ``tensors``; see the module docstring for the columns."""
    if not tensors:
        raise CapscaleError("no tensor to probe")
    if not formats:
        raise CapscaleError("give at least one format to probe (--formats int4 nvfp4 ...)")
    fmts = [parse_format(s) for s in formats]
    specs = [f.spec for f in fmts]
    if len(set(specs)) != len(specs):
        raise CapscaleError(f"--formats names a format twice: {specs}")
    g = {f.spec: gmse(f, rel_err=gmse_rel_err) for f in fmts}
    gauss_cache: dict = {}
    rows, skipped = [], []
    for t in tensors:
        x = t.tensor
        kurt, peak = tails(x)
        z = _gaussian_like(tuple(x.shape), gauss_cache, seed)
        for f in fmts:
            try:
                real, gauss = relative_mse(f, x), relative_mse(f, z)
            except CapscaleError as e:  # e.g. groups of 128 on a 64-wide row
                skipped.append(f"{t.name} × {f.spec}: {e}")
                real = gauss = math.nan
            gm = g[f.spec].gmse
            rows.append({
                "tensor": t.name, "layer_type": t.layer_type, "kind": t.kind,
                "rows": int(x.shape[0]), "cols": int(x.shape[1]), "format": f.spec,
                "bits_per_value": f.bits(tuple(x.shape)), "rel_mse": real,
                "eff_bits": float(log_quarter(real)) if real > 0 else math.nan,
                "gmse": gm, "ratio_to_gmse": real / gm if gm > 0 else math.nan,
                "gauss_same_shape": gauss,
                "ratio_to_gauss": real / gauss if gauss > 0 else math.nan,
                "kurtosis": kurt, "max_over_rms": peak,
            })
    df = pd.DataFrame(rows)
    df["numel"] = df["rows"] * df["cols"]
    return ProbeResult(df, _by_layer_type(df), *_summary(df, g), skipped=skipped)


def _weighted(group: pd.DataFrame, col: str) -> float:
    ok = group[col].notna()
    w = group.loc[ok, "numel"].to_numpy(np.float64)
    return float(np.average(group.loc[ok, col], weights=w)) if w.sum() > 0 else math.nan


def _by_layer_type(df: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (lt, spec), grp in df.groupby(["layer_type", "format"], sort=False):
        real, gauss = _weighted(grp, "rel_mse"), _weighted(grp, "gauss_same_shape")
        gm = float(grp["gmse"].iloc[0])
        out.append({"layer_type": lt, "kind": grp["kind"].iloc[0], "format": spec,
                    "tensors": len(grp), "rel_mse": real,
                    "eff_bits": float(log_quarter(real)) if real > 0 else math.nan,
                    "ratio_to_gmse": real / gm, "ratio_to_gauss": real / gauss,
                    "kurtosis": float(grp["kurtosis"].mean()),
                    "max_over_rms": float(grp["max_over_rms"].max())})
    return pd.DataFrame(out)


def _summary(df: pd.DataFrame, g: dict) -> tuple[pd.DataFrame, list[str]]:
    # every format over the same tensors: those every format could represent
    ok = df.groupby("tensor")["rel_mse"].apply(lambda s: s.notna().all())
    common = df[df["tensor"].isin(ok[ok].index)]
    if common.empty:
        raise CapscaleError("no tensor can be represented by every format (shapes?); probe "
                            "fewer formats at once")
    rows = []
    for spec in dict.fromkeys(df["format"]):
        grp = common[common["format"] == spec]
        real, gauss = _weighted(grp, "rel_mse"), _weighted(grp, "gauss_same_shape")
        rows.append({"format": spec, "bits_per_value": parse_format(spec).bits_per_value,
                     "rel_mse": real, "eff_bits": float(log_quarter(real)) if real > 0 else math.nan,
                     "gauss_same_shape": gauss, "gmse": g[spec].gmse,
                     "ratio_to_gmse": real / g[spec].gmse, "ratio_to_gauss": real / gauss,
                     "tensors": len(grp)})
    s = pd.DataFrame(rows)
    s["rank_real"] = s["rel_mse"].rank(method="min").astype(int)
    s["rank_gauss"] = s["gauss_same_shape"].rank(method="min").astype(int)
    s["rank_gmse"] = s["gmse"].rank(method="min").astype(int)
    return s.sort_values("rank_real", kind="stable").reset_index(drop=True), disagreements(s)


def disagreements(summary: pd.DataFrame, min_gap: float = MIN_GAP) -> list[str]:
    """Each pair of formats ordered one way on the real tensors and the other way on Gaussian
    tensors of the same shapes, both gaps larger than ``min_gap`` (relative)."""
    out = []
    recs = summary.set_index("format")
    for a, b in combinations(recs.index, 2):
        ra, rb = recs.loc[a, "rel_mse"], recs.loc[b, "rel_mse"]
        ga, gb = recs.loc[a, "gauss_same_shape"], recs.loc[b, "gauss_same_shape"]
        if not all(np.isfinite([ra, rb, ga, gb])) or (ra < rb) == (ga < gb):
            continue
        if abs(ra - rb) < min_gap * min(ra, rb) or abs(ga - gb) < min_gap * min(ga, gb):
            continue
        win, lose = (a, b) if ra < rb else (b, a)
        out.append(f"{win} beats {lose} on the real tensors (relative MSE "
                   f"{recs.loc[win, 'rel_mse']:.4g} vs {recs.loc[lose, 'rel_mse']:.4g}) but loses "
                   f"on Gaussian tensors of the same shapes ({recs.loc[win, 'gauss_same_shape']:.4g}"
                   f" vs {recs.loc[lose, 'gauss_same_shape']:.4g})")
    return out
