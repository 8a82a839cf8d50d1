"""GMSE, the capacity probe: E‖x̂ − x‖² / E‖x‖² for x with i.i.d. N(0, 1) entries.

Exact where the grid allows it: a single scalar grid scaled by the RMS of a row or of the
tensor (rotated or not: a Hadamard rotation maps Gaussian data to Gaussian data) has the
GMSE of its grid at scale α*, integrated cell by cell (the limit of long rows, where the
measured RMS is σ); noise injection has the GMSE it was asked for. Everything else is Monte
Carlo over independent tensors of the given shape (rows × columns matter: per-row and
per-group scales, N:M patterns and per-tensor top-k all see them), with a fixed seed, until
the standard error is below `rel_err` of the estimate.

The Monte Carlo estimator uses E‖x‖² = numel exactly and the per-tensor ‖x‖² as a control
variate: G = mean(e_i) − β·(mean(s_i) − 1), with e_i, s_i the per-value means of ‖x̂ − x‖² and
‖x‖² of tensor i. It is never worse than the plain ratio of sums and is much better for
per-tensor scales, whose error moves with the tensor's own RMS.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from capscale.errors import CapscaleError
from capscale.formats import Format, parse_format
from capscale.formats.gaussian import grid_gmse
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import ScalarQuantizer

DEFAULT_SHAPE = (512, 4096)


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
        return math.log(self.gmse) / math.log(0.25)

    def to_dict(self) -> dict:
        return asdict(self)


def exact_gmse(fmt: Format) -> float | None:
    """The exact GMSE when the format allows it, else None."""
    if len(fmt.parts) != 1:
        return 0.0 if fmt.is_identity else None
    part = fmt.parts[0]
    if isinstance(part, NoiseInjection):
        return float(part.mse)
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "rms" and part.scaling.group in ("row", "tensor"):
        return grid_gmse(part.levels, part.alpha)
    return None


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
        value = exact_gmse(f)
        if value is not None:
            return GMSEResult(f.spec, value, 0.0, "exact", bits, 0, (rows, cols), time.perf_counter() - start)

    numel = rows * cols
    gen = torch.Generator(device=device).manual_seed(seed)
    errs: list[float] = []
    sqs: list[float] = []
    estimate, se = float("nan"), float("inf")
    with torch.random.fork_rng(devices=[] if str(device) == "cpu" else [device]):
        torch.manual_seed(seed)  # noise formats draw from the global generator
        while True:
            x = torch.randn(rows, cols, generator=gen, device=device, dtype=dtype)
            xh = f.quantize(x)
            errs.append(float((xh - x).double().square().sum()) / numel)
            sqs.append(float(x.double().square().sum()) / numel)
            n = len(errs)
            # the estimate costs O(n): from 64 tensors on it is checked at ~64 points per
            # doubling, so that tiny shapes (many tensors) do not cost O(n²)
            if n >= max(2, min_tensors) and (n <= 64 or n % (n // 64) == 0 or n >= max_tensors):
                estimate, se = _control_variate(np.array(errs), np.array(sqs))
                if se <= rel_err * abs(estimate) or n * numel >= max_values or n >= max_tensors:
                    break
            elif n * numel >= max_values or n >= max_tensors:
                estimate, se = float(np.mean(errs)), float("inf")
                break
            if progress and n % 8 == 0:
                print(f"\r  {f.spec}: {n} tensors, GMSE {estimate:.6g} ± {se:.2g}", end="", file=sys.stderr)
    if progress:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    return GMSEResult(f.spec, estimate, se, "monte-carlo", bits, len(errs) * numel, (rows, cols),
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
