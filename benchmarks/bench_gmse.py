"""The standard panel's GMSE end to end, before and after, alternately in one process.

"before" is the capacity probe as of commit a1c0c3c, re-created here: exact for the RMS-scaled
grids and the block formats (MX, NVFP4, NF4, absmax groups), Monte Carlo over whole tensors
(at least 4, with ‖x‖² as the control variate, 32 for the formats with per-tensor statistics)
for the rest. "after" is `capscale.capacity.gmse`: the magnitude masks (sparsity, N:M,
outliers, alone or before an RMS grid) integrated too, Monte Carlo in batches of rows with an
exact companion as a second control variate where there is one. Both to the same relative
standard error (1e-3 by default), code books and caches built before the timings.

    python benchmarks/bench_gmse.py [--specs int4 nf4 ...] [--rel-err 1e-3] [--no-before]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from capscale.capacity import gmse
from capscale.capacity.block_gmse import exact_block_gmse
from capscale.capacity.probe import DEFAULT_SHAPE, rows_independent
from capscale.capacity.table import STANDARD_PANEL
from capscale.formats import parse_format
from capscale.formats.gaussian import grid_gmse
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import ScalarQuantizer


def _before_exact(f, shape):
    if len(f.parts) != 1:
        return 0.0 if f.is_identity else None
    part = f.parts[0]
    if isinstance(part, NoiseInjection):
        return float(part.mse)
    if isinstance(part, ScalarQuantizer) and part.scaling.rule == "rms" and part.scaling.group in ("row", "tensor"):
        return grid_gmse(part.levels, part.alpha)
    return exact_block_gmse(part, shape)


def _cv(e, s):
    n = len(e)
    ds = s - s.mean()
    var_s = float(ds @ ds)
    beta = float(ds @ (e - e.mean())) / var_s if var_s > 0 else 0.0
    return float(e.mean() - beta * (s.mean() - 1.0)), float(np.std(e - beta * s, ddof=1) / math.sqrt(n))


def before_gmse(spec: str, rel_err: float, shape=DEFAULT_SHAPE, seed: int = 0, min_tensors: int = 4,
                max_values: int = 1 << 28) -> tuple[float, float, str]:
    """(GMSE, s.e., method) as the probe of a1c0c3c computed them."""
    f = parse_format(spec)
    rows, cols = shape
    value = _before_exact(f, shape)
    if value is not None:
        return value, 0.0, "exact"
    per_row = rows_independent(f) and rows > 1
    min_units = 2 if per_row else 32
    gen = torch.Generator().manual_seed(seed)
    errs, sqs = [], []
    n, units = 0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while True:
            x = torch.randn(rows, cols, generator=gen)
            e = (f.quantize(x) - x).double().square().sum(dim=1) / cols
            sq = x.double().square().sum(dim=1) / cols
            if per_row:
                errs.append(e.numpy())
                sqs.append(sq.numpy())
            else:
                errs.append(np.array([float(e.mean())]))
                sqs.append(np.array([float(sq.mean())]))
            n += 1
            units += len(errs[-1])
            if n >= min_tensors and units >= min_units:
                est, se = _cv(np.concatenate(errs), np.concatenate(sqs))
                if se <= rel_err * abs(est) or n * rows * cols >= max_values:
                    return est, se, "monte-carlo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="*", default=list(STANDARD_PANEL))
    ap.add_argument("--rel-err", type=float, default=1e-3)
    ap.add_argument("--no-before", action="store_true", help="time the current probe only")
    args = ap.parse_args()
    for spec in args.specs:  # build code books, grids' α* and caches outside the timings
        gmse(spec, shape=(8, 4096), rel_err=0.5)
        gmse(spec)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {DEFAULT_SHAPE[0]}x{DEFAULT_SHAPE[1]}, "
          f"rel_err {args.rel_err:g}")
    print(f"{'format':<22} {'before':>12} {'method':<11} {'s':>6}   {'after':>12} {'method':<11} {'s':>6}  z")
    t_before = t_after = 0.0
    n_exact = [0, 0]
    worst = 0.0
    for spec in args.specs:
        if args.no_before:
            b, b_se, b_method, dt_b = float("nan"), float("nan"), "-", 0.0
        else:
            t = time.perf_counter()
            b, b_se, b_method = before_gmse(spec, args.rel_err)
            dt_b = time.perf_counter() - t
        t = time.perf_counter()
        r = gmse(spec, rel_err=args.rel_err)
        dt_a = time.perf_counter() - t
        t_before += dt_b
        t_after += dt_a
        n_exact[0] += b_method == "exact"
        n_exact[1] += r.method == "exact"
        se = math.hypot(b_se, r.stderr)
        z = (r.gmse - b) / se if se > 0 else (0.0 if abs(r.gmse - b) <= 1e-12 * abs(b) else float("inf"))
        if math.isfinite(b):
            worst = max(worst, abs(z))
        print(f"{spec:<22} {b:12.6g} {b_method:<11} {dt_b:6.3f}   {r.gmse:12.6g} {r.method:<11} {dt_a:6.3f}  {z:+.2f}",
              flush=True)
    n = len(args.specs)
    print(f"\n{n} formats: before {t_before:.2f} s ({n_exact[0]} exact), after {t_after:.2f} s ({n_exact[1]} exact)"
          + (f", {t_before / t_after:.0f}x; largest |z| between them {worst:.2f}" if not args.no_before else ""))


if __name__ == "__main__":
    main()
