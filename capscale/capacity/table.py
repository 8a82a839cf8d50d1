"""The GMSE table of a list of formats, and the standard panel that `capscale gmse` runs."""

from __future__ import annotations

import sys

import numpy as np

from capscale.capacity.bounds import scalar_bound, shannon_bound
from capscale.capacity.law import UNIFIED_LLAMA_C4, log_quarter, rho_unified
from capscale.capacity.probe import DEFAULT_SHAPE, gmse

# About thirty formats across every family, from 1 to 8 bits.
STANDARD_PANEL = (
    # INT (QuEST grid) and its variants
    "int1", "int2", "int3", "int4", "int5", "int6", "int8",
    "ternary", "int4:zero", "int4:absmax:g128", "int4:mse:g128",
    # FP grids, NF4 and the Lloyd–Max optimum
    "e2m1", "e3m0", "e2m3", "e3m2", "e4m3", "e5m2", "nf4", "lloydmax2", "lloydmax3", "lloydmax4",
    # block formats
    "mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxint8", "nvfp4",
    # sparsity, sparse + quantized, outliers
    "sparse0.5", "2:4", "sparse0.5+int4", "2:4+int4", "2:4:pairs+int4:had", "outliers0.01+int3",
    # vector quantization
    "vq2:b4", "vq4:b8", "vq8:b8",
)

COLUMNS = [
    "spec", "bits_per_value", "gmse", "gmse_se", "method", "log_quarter_gmse",
    "ratio_to_shannon", "ratio_to_scalar_bound", "rho_unified",
]


def gmse_records(
    specs=STANDARD_PANEL,
    shape: tuple[int, int] = DEFAULT_SHAPE,
    rel_err: float = 1e-3,
    seed: int = 0,
    exact: bool = True,
    progress: bool = True,
    tensor_amax: float | None = None,
) -> list[dict]:
    """The rows of :func:`gmse_table` as dicts (keys COLUMNS), without pandas."""
    rows = []
    for i, spec in enumerate(specs):
        if progress:
            print(f"\r[{i + 1}/{len(specs)}] {spec:<28}", end="", file=sys.stderr, flush=True)
        r = gmse(spec, shape=shape, rel_err=rel_err, seed=seed, exact=exact, tensor_amax=tensor_amax)
        b = r.bits_per_value
        finite_bits = np.isfinite(b)
        rows.append({
            "spec": r.spec,
            "bits_per_value": b,
            "gmse": r.gmse,
            "gmse_se": r.stderr,
            "method": r.method,
            "log_quarter_gmse": float(log_quarter(r.gmse)) if r.gmse > 0 else float("inf"),
            "ratio_to_shannon": r.gmse / shannon_bound(b) if finite_bits else float("nan"),
            "ratio_to_scalar_bound": r.gmse / scalar_bound(b) if finite_bits else float("nan"),
            "rho_unified": rho_unified(r.gmse, **UNIFIED_LLAMA_C4),
        })
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    return rows


def gmse_table(
    specs=STANDARD_PANEL,
    shape: tuple[int, int] = DEFAULT_SHAPE,
    rel_err: float = 1e-3,
    seed: int = 0,
    exact: bool = True,
    progress: bool = True,
    tensor_amax: float | None = None,
):
    """One row per format: bits, GMSE ± s.e., log_{1/4} GMSE, ratios to both lower bounds, and
    ρ from the unified paper's Llama/C4 constants (a pandas DataFrame)."""
    import pandas as pd

    return pd.DataFrame(gmse_records(specs, shape=shape, rel_err=rel_err, seed=seed, exact=exact,
                                     progress=progress, tensor_amax=tensor_amax), columns=COLUMNS)
