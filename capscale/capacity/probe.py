"""GMSE, the capacity probe: E‖x̂ − x‖² / E‖x‖² for x with i.i.d. N(0, 1) entries.

Exact where the format allows it: a single scalar grid scaled by the RMS of a row or of the
tensor (rotated or not: a Hadamard rotation maps Gaussian data to Gaussian data) has the
GMSE of its grid at scale α*, integrated cell by cell (the limit of long rows, where the
measured RMS is σ); the block-scaled formats (MX with every element type, NVFP4, NF4 and any
absmax-scaled grid) are integrated over the distribution of the block maximum
(:mod:`capscale.capacity.block_gmse`), at the given shape; noise injection has the GMSE it was
asked for; magnitude masks (sparsity, N:M, outliers), alone or before an RMS-scaled grid,
are integrated over the probability that a value is kept (:mod:`capscale.capacity.mask_gmse`;
exact at the shape for a mask alone, the long-row limit of the grid's scale otherwise).
Everything else is Monte Carlo over independent tensors of the given shape (rows ×
columns matter: per-row and per-group scales, N:M patterns and per-tensor top-k all see
them), with a fixed seed, until the standard error is below `rel_err` of the estimate.

The Monte Carlo estimator uses E‖x‖² = numel exactly and ‖x‖² as a control variate:
G = mean(e_i) − β·(mean(s_i) − 1), with e_i, s_i the per-value means of ‖x̂ − x‖² and ‖x‖² of
unit i; a grid whose clip is searched per group ("mse") adds the same grid at fixed clips of
the group absmax, whose GMSE is exact, and vector quantization the fourth moment of its
vectors' norms, as further controls (`_controls`). A unit is a row when the format treats
rows independently (per-row or per-group scales, N:M, VQ, row sparsity: rows are drawn in
batches, whatever the shape's row count, until the target error, at least MIN_ROW_UNITS of
them so that the standard error is itself well estimated, then about as many as the standard
error says are still missing), else a whole tensor, and then at least MIN_TENSOR_UNITS
tensors are drawn, so that ±2 standard errors is a 95% interval (checked over many seeds by
the tests).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from capscale.capacity.block_gmse import absmax_grid_gmse, exact_block_gmse
from capscale.capacity.law import log_quarter
from capscale.capacity.mask_gmse import exact_mask_gmse
from capscale.errors import CapscaleError
from capscale.formats import Format, parse_format
from capscale.formats.base import group_view
from capscale.formats.block import MXQuantizer
from capscale.formats.gaussian import grid_gmse
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import MSE_CLIP_CANDIDATES, ScalarQuantizer
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers
from capscale.formats.vq import VectorQuantizer

DEFAULT_SHAPE = (512, 4096)
MIN_TENSOR_UNITS = 32  # whole tensors as units: a t-interval with 31 degrees of freedom ≈ ±2 s.e.
MIN_ROW_UNITS = 128  # rows as units: at least this many, so that the standard error is itself sound
ROW_BATCH = 1 << 18  # values drawn at a time for row-independent formats
MIN_ROW_STEP = 8  # rows: the least drawn at a time once the minimum is reached


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


def exact_gmse(fmt: Format, shape: tuple[int, int] = DEFAULT_SHAPE, tensor_amax: float | None = None) -> float | None:
    """The exact GMSE when the format allows it (at `shape` for block formats; NVFP4 at the
    tensor scale of `tensor_amax` when given), else None."""
    masked = exact_mask_gmse(fmt, shape)
    if masked is not None:
        return masked
    if len(fmt.parts) != 1:
        return 0.0 if fmt.is_identity else None
    part = fmt.parts[0]
    if isinstance(part, NoiseInjection):
        return float(part.mse)
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "rms" and part.scaling.group in ("row", "tensor"):
        return grid_gmse(part.levels, part.alpha)
    return exact_block_gmse(part, _check_shape(shape), tensor_amax)


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
    tensor_amax: float | None = None,
) -> GMSEResult:
    """GMSE of a format on standard Gaussian data, with its standard error.

    `exact=False` forces Monte Carlo (to check the exact path, or to see finite-row effects).
    NVFP4's FP32 tensor scale g = amax/2688 places its E4M3 block scales, so its GMSE depends
    on the tensor maximum: by default it is the expectation over Gaussian tensors of `shape`,
    each with its own maximum; `tensor_amax` (in σ) sets a static tensor scale instead, blocks
    above it saturating (exact only; 4.5 gives the published 0.0090463).
    Monte Carlo stops at the target relative error, at ``max_values`` values or at
    ``max_tensors`` draws (tiny shapes: each costs a call), with the error it reached. Its
    units are rows for a row-independent format (drawn ROW_BATCH values at a time, at least
    MIN_ROW_UNITS rows), else whole tensors (at least ``min_tensors`` and MIN_TENSOR_UNITS).
    """
    f = parse_format(fmt)
    rows, cols = _check_shape(shape)
    if not 0 < rel_err < 1:
        raise CapscaleError(f"rel_err must be in (0, 1), got {rel_err}")
    start = time.perf_counter()
    bits = f.bits((rows, cols))
    if tensor_amax is not None and not (exact and tensor_amax > 0):
        raise CapscaleError("a fixed tensor maximum (tensor_amax > 0) applies to the exact NVFP4 integral only")
    if exact:
        value = exact_gmse(f, (rows, cols), tensor_amax)
        if value is not None:
            return GMSEResult(f.spec, value, 0.0, "exact", bits, 0, (rows, cols), time.perf_counter() - start)

    per_row = rows_independent(f) and rows > 1
    # rows are the units of a row-independent format, drawn in batches of about ROW_BATCH
    # values whatever the shape's row count (a row's error does not depend on its neighbours)
    batch = max(1, ROW_BATCH // cols) if per_row else rows
    min_units = MIN_ROW_UNITS if per_row else max(MIN_TENSOR_UNITS, min_tensors)
    min_units = min(min_units, max_tensors * batch)
    controls = _controls(f, (rows, cols))
    gen = torch.Generator(device=device).manual_seed(_stream_seed(seed))
    errs: list[np.ndarray] = []
    ctrl: list[np.ndarray] = []
    n_draws, n_units, n_values, size = 0, 0, 0, batch
    estimate, se = float("nan"), float("inf")
    with torch.random.fork_rng(devices=[] if str(device) == "cpu" else [device]):
        torch.manual_seed(seed)  # noise formats draw from the global generator
        while True:
            x = torch.randn(size, cols, generator=gen, device=device, dtype=dtype)
            e = _row_errors(f, x)
            z = torch.stack([x.double().square().mean(dim=1) - 1.0, *controls(x)], dim=1)
            if not per_row:
                e, z = e.mean(dim=0, keepdim=True), z.mean(dim=0, keepdim=True)
            errs.append(e.cpu().numpy())
            ctrl.append(z.cpu().numpy())
            n_draws += 1
            n_units += len(errs[-1])
            n_values += size * cols
            # the estimate costs O(n): from 64 draws on it is checked at ~64 points per
            # doubling, so that tiny shapes (many draws) do not cost O(n²)
            check = n_draws <= 64 or n_draws % (n_draws // 64) == 0
            exhausted = n_values >= max_values or n_draws >= max_tensors
            if n_units >= min_units and (check or exhausted):
                estimate, se = _control_variate(np.concatenate(errs), np.concatenate(ctrl))
                target = rel_err * abs(estimate)
                if se <= target or exhausted:
                    break
                if per_row and se < math.inf:
                    # the standard error falls as 1/√n: draw about the rows still missing (a
                    # tenth more, at least MIN_ROW_STEP), not a whole batch
                    missing = n_units * ((se / target) ** 2 - 1) * 1.1
                    size = int(min(batch, max(MIN_ROW_STEP, math.ceil(missing))))
            elif exhausted:
                e_all = np.concatenate(errs)
                estimate = float(e_all.mean())
                se = _control_variate(e_all, np.concatenate(ctrl))[1] if n_units > 2 else float("inf")
                break
            if progress and n_draws % 8 == 0:
                print(f"\r  {f.spec}: {n_units} {'rows' if per_row else 'tensors'}, GMSE {estimate:.6g} ± {se:.2g}",
                      end="", file=sys.stderr)
    if progress:
        print("\r" + " " * 70 + "\r", end="", file=sys.stderr)
    return GMSEResult(f.spec, estimate, se, "monte-carlo", bits, n_values, (rows, cols),
                      time.perf_counter() - start)


def _stream_seed(seed: int) -> int:
    """The probe's generator seed for `seed`: mixed, so that the probe never draws the very
    numbers a code book was trained on (`train_codebook` draws from `manual_seed(0)`: the VQ
    code books' error on their own 2^19 training vectors is ~1% below their error on new data,
    and a probe seeded with 0 read its first 2M values from that stream)."""
    return int(np.random.SeedSequence([seed, 0x70726F6265]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _row_errors(f: Format, x: torch.Tensor) -> torch.Tensor:
    """Per row, the mean squared error of `f` on x (float64)."""
    return (f.quantize(x) - x).double().square().mean(dim=1)


def _controls(f: Format, shape: tuple[int, int]):
    """Control variates beyond ‖x‖², for the formats left to Monte Carlo: a function of a
    batch x giving a list of tensors, one value per row each, whose expectations are exactly 0:

    - a grid whose clip is searched per group ("mse"): the same grid at fixed clips c·absmax,
      c every fifth candidate of the search (0.25, 0.375, ..., 1), each an absmax-scaled grid
      of levels c·q whose GMSE is exact (:mod:`capscale.capacity.block_gmse`). The search picks
      one of them or a neighbour in every group: for int4:mse:g128 the regression on them
      leaves 2% of the per-row variance (10% with c = 1 alone, 85% with ‖x‖² alone; 1.4%
      with all 31 candidates, at four times the cost).
    - vector quantization: the mean over a row's vectors of ‖v‖⁴ (expectation d(d + 2) for
      d-dimensional N(0, I) vectors): it follows how far out a row's vectors fall, which the
      code book's error tracks (a 2-2.5x smaller variance for vq2:b4 and vq4:b8).

    A rotated format's controls see the rotated rows (again i.i.d. N(0, 1), so the
    expectations hold)."""
    if len(f.parts) != 1:
        return _none
    part = f.parts[0]
    rows, cols = shape
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "mse":
        group = part.scaling.group
        n = rows * cols if group == "tensor" else cols if group == "row" else int(group)
        if n < 2 or (group not in ("tensor", "row") and cols % n):
            return _none
        clips = MSE_CLIP_CANDIDATES[::5]
        levels = np.sort(np.asarray(part.levels, dtype=np.float64))
        means = [absmax_grid_gmse(c * levels, n) for c in clips]

        def clipped(x):
            xv = group_view(_rotated(f, x).double(), group, f.spec)
            amax = xv.abs().amax(dim=-1, keepdim=True)
            return [(part.dequantize_scaled(xv, amax * c) - xv).square().reshape(x.shape).mean(dim=1) - m
                    for c, m in zip(clips, means)]

        return clipped
    if isinstance(part, VectorQuantizer) and cols % part.dim == 0:
        d = part.dim

        def fourth(x):
            r2 = _rotated(f, x).double().reshape(x.shape[0], -1, d).square().sum(dim=-1)
            return [r2.square().mean(dim=1) - d * (d + 2)]

        return fourth
    return _none


def _none(x: torch.Tensor) -> list[torch.Tensor]:
    return []


def _rotated(f: Format, x: torch.Tensor) -> torch.Tensor:
    """x as the format's parts see it (Hadamard-rotated rows for a rotated format)."""
    if f.rotation is None:
        return x
    from capscale.formats.hadamard import effective_block, fwht

    return fwht(x, effective_block(f.rotation, x.shape[-1]))


def _control_variate(e: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Estimate E[e] from units e with controls z (n, p) of known mean 0 (‖x‖²/n − 1 and the
    format's further controls, `_controls`): the regression estimator mean(e) − β·mean(z), β
    fitted by least squares; returns (estimate, standard error). The variance of the residuals
    over n is inflated by (n − 2)/(n − p − 2), what fitting β costs (exact for normal
    controls: 7% with p = 8 controls on 128 rows)."""
    n = len(e)
    z = z.reshape(n, -1)
    p = z.shape[1]
    if n < p + 3:
        return float(e.mean()), float("inf")
    dz, de = z - z.mean(axis=0), e - e.mean()
    beta = np.linalg.lstsq(dz, de, rcond=None)[0] if np.any(dz) else np.zeros(p)
    estimate = float(e.mean() - z.mean(axis=0) @ beta)
    resid = de - dz @ beta
    se = float(np.sqrt(resid @ resid / (n - 1 - p) / n * (n - 2) / (n - p - 2)))
    return estimate, se
