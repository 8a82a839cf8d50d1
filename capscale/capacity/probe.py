"""GMSE, the capacity probe: E‖x̂ − x‖² / E‖x‖² for x with i.i.d. N(0, 1) entries.

Exact where the format allows it: a single scalar grid scaled by the RMS of a row or of the
tensor (rotated or not: a Hadamard rotation maps Gaussian data to Gaussian data) has the
GMSE of its grid at scale α*, integrated cell by cell (the limit of long rows, where the
measured RMS is σ); the block-scaled formats (MX with every element type, NVFP4, NF4 and any
absmax-scaled grid) are integrated over the distribution of the block maximum
(:mod:`capscale.capacity.block_gmse`), at the given shape; noise injection has the GMSE it was
asked for. Everything else is Monte Carlo over independent tensors of the given shape (rows ×
columns matter: per-row and per-group scales, N:M patterns and per-tensor top-k all see
them), with a fixed seed, until the standard error is below `rel_err` of the estimate.

The Monte Carlo estimator uses E‖x‖² = numel exactly and ‖x‖² as a control variate:
G = mean(e_i) − β·(mean(s_i) − 1), with e_i, s_i the per-value means of ‖x̂ − x‖² and ‖x‖² of
unit i. A unit is a row when the format treats rows independently (per-row or per-group
scales, N:M, VQ, row sparsity: thousands of units, so the standard error is itself well
estimated), else a whole tensor, and then at least MIN_TENSOR_UNITS tensors are drawn, so that
±2 standard errors is a 95% interval (checked over many seeds by the tests).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from capscale.capacity.block_gmse import exact_block_gmse
from capscale.capacity.law import log_quarter
from capscale.errors import CapscaleError
from capscale.formats import Format, parse_format
from capscale.formats.block import MXQuantizer
from capscale.formats.gaussian import grid_gmse
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import ScalarQuantizer
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers
from capscale.formats.vq import VectorQuantizer

DEFAULT_SHAPE = (512, 4096)
MIN_TENSOR_UNITS = 32  # whole tensors as units: a t-interval with 31 degrees of freedom ≈ ±2 s.e.


@dataclass(frozen=True)
class GMSEResult:
    spec: str
    gmse: float
    stderr: float
    method: str  # "exact" | "monte-carlo"
    bits_per_value: float
    n_samples: int
    shape: tuple[int, int]
    seconds: float

    @property
    def log4_inverse(self) -> float:
        """log_{1/4} GMSE: the 'effective bits' of the unified paper's capacity law."""
        return float(log_quarter(self.gmse))

    def to_dict(self) -> dict:
        return asdict(self)


def exact_gmse(fmt: Format, shape: tuple[int, int] = DEFAULT_SHAPE) -> float | None:
    """The exact GMSE when the format allows it (at `shape` for block formats), else None."""
    if len(fmt.parts) != 1:
        return 0.0 if fmt.is_identity else None
    part = fmt.parts[0]
    if isinstance(part, NoiseInjection):
        return float(part.mse)
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "rms" and part.scaling.group in ("row", "tensor"):
        return grid_gmse(part.levels, part.alpha)
    return exact_block_gmse(part, _check_shape(shape))


def rows_independent(fmt: Format) -> bool:
    """Whether the format compresses each row on its own (no statistic over the whole tensor),
    so that rows of a Gaussian tensor give independent errors."""
    for part in fmt.parts:
        if isinstance(part, ScalarQuantizer):
            ok = part.scaling.group != "tensor"
        elif isinstance(part, (MagnitudeSparsity, Outliers)):
            ok = part.per_row
        else:
            ok = isinstance(part, (MXQuantizer, NMSparsity, VectorQuantizer, NoiseInjection))
        if not ok:
            return False
    return True


def _check_shape(shape) -> tuple[int, int]:
    try:
        rows, cols = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise CapscaleError(f"the probe shape must be two positive integers (rows, cols), got {shape!r}") from None
    if rows < 1 or cols < 1:
        raise CapscaleError(f"the probe shape must be two positive integers (rows, cols), got {shape!r}")
    return rows, cols


def gmse(
    fmt: str | Format,
    shape: tuple[int, int] = DEFAULT_SHAPE,
    rel_err: float = 1e-3,
    seed: int = 0,
    min_tensors: int = 4,
    max_values: int = 1 << 28,
    max_tensors: int = 20_000,
    exact: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> GMSEResult:
    """GMSE of a format on standard Gaussian data, with its standard error.

    `exact=False` forces Monte Carlo (to check the exact path, or to see finite-row effects).
    Monte Carlo stops at the target relative error, at ``max_values`` values or at
    ``max_tensors`` tensors (tiny shapes: each costs a call), with the error it reached.
    """
    f = parse_format(fmt)
    rows, cols = _check_shape(shape)
    if not 0 < rel_err < 1:
        raise CapscaleError(f"rel_err must be in (0, 1), got {rel_err}")
    start = time.perf_counter()
    bits = f.bits((rows, cols))
    if exact:
        value = exact_gmse(f, (rows, cols))
        if value is not None:
            return GMSEResult(f.spec, value, 0.0, "exact", bits, 0, (rows, cols), time.perf_counter() - start)

    numel = rows * cols
    per_row = rows_independent(f) and rows > 1
    min_units = 2 if per_row else MIN_TENSOR_UNITS
    gen = torch.Generator(device=device).manual_seed(seed)
    errs: list[np.ndarray] = []
    sqs: list[np.ndarray] = []
    n_tensors, n_units = 0, 0
    estimate, se = float("nan"), float("inf")
    with torch.random.fork_rng(devices=[] if str(device) == "cpu" else [device]):
        torch.manual_seed(seed)  # noise formats draw from the global generator
        while True:
            x = torch.randn(rows, cols, generator=gen, device=device, dtype=dtype)
            xh = f.quantize(x)
            e = (xh - x).double().square().sum(dim=1) / cols
            sq = x.double().square().sum(dim=1) / cols
            if per_row:
                errs.append(e.cpu().numpy())
                sqs.append(sq.cpu().numpy())
            else:
                errs.append(np.array([float(e.mean())]))
                sqs.append(np.array([float(sq.mean())]))
            n_tensors += 1
            n_units += len(errs[-1])
            # the estimate costs O(n): from 64 tensors on it is checked at ~64 points per
            # doubling, so that tiny shapes (many tensors) do not cost O(n²)
            check = n_tensors <= 64 or n_tensors % (n_tensors // 64) == 0
            exhausted = n_tensors * numel >= max_values or n_tensors >= max_tensors
            if n_tensors >= min_tensors and n_units >= min_units and (check or exhausted):
                estimate, se = _control_variate(np.concatenate(errs), np.concatenate(sqs))
                if se <= rel_err * abs(estimate) or exhausted:
                    break
            elif exhausted and not (n_tensors >= min_tensors and n_units >= min_units):
                estimate = float(np.concatenate(errs).mean())
                se = float("inf") if n_units < 2 else _control_variate(np.concatenate(errs), np.concatenate(sqs))[1]
                break
            if progress and n_tensors % 8 == 0:
                print(f"\r  {f.spec}: {n_tensors} tensors, GMSE {estimate:.6g} ± {se:.2g}", end="", file=sys.stderr)
    if progress:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    return GMSEResult(f.spec, estimate, se, "monte-carlo", bits, n_tensors * numel, (rows, cols),
                      time.perf_counter() - start)


def _control_variate(e: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """Estimate E[e] using E[s] = 1 exactly; returns (estimate, standard error)."""
    n = len(e)
    ds = s - s.mean()
    var_s = float(ds @ ds)
    beta = float(ds @ (e - e.mean())) / var_s if var_s > 0 else 0.0
    estimate = float(e.mean() - beta * (s.mean() - 1.0))
    resid = e - beta * s
    se = float(np.std(resid, ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    return estimate, se
