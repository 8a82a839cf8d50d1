"""The standard panel's GMSE end to end: in one process before and after, and in fresh
processes cold and warm.

In one process (the default): "before" is the capacity probe as of commit a1c0c3c,
re-created here: exact for the RMS-scaled grids and the block formats (MX, NVFP4, NF4, absmax
groups), Monte Carlo over whole tensors (at least 4, with ‖x‖² as the control variate, 32
for the formats with per-tensor statistics) for the rest. "after" is
`capscale.capacity.gmse`. Both to the same relative standard error (1e-3 by default),
alternately format by format, code books and caches built before the timings.

In fresh processes (``--processes N``): N rounds, each timing in new Python processes, for
this checkout and, with ``--against DIR``, alternately for another checkout of capscale
(e.g. a worktree of an older commit):

- cold: an empty capscale cache; the import of the panel's modules, the panel (every format's
  GMSE and both bounds, as `capscale gmse` computes them), then the same panel again in that
  process (warm: every solved constant in memory);
- warm cache: the same in a new process whose cache the cold one filled;
- `capscale gmse` (the whole command, start-up included, output to /dev/null), wall time,
  with an empty cache and with a filled one.

    python benchmarks/bench_gmse.py [--specs int4 nf4 ...] [--rel-err 1e-3] [--no-before]
    python benchmarks/bench_gmse.py --processes 3 [--against /path/to/old/checkout --label OLD]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


PANEL_SCRIPT = """
import json, sys, time
t = time.perf_counter()
import pandas  # gmse_table's (imported by the table module in older checkouts): not the panel's
t_pandas = time.perf_counter() - t
t = time.perf_counter()
from capscale.capacity.table import STANDARD_PANEL, gmse_table
t_import = time.perf_counter() - t
specs = json.loads(sys.argv[1]) or list(STANDARD_PANEL)
times = []
for _ in range(2):
    t = time.perf_counter()
    gmse_table(specs, rel_err=float(sys.argv[2]), progress=False)
    times.append(time.perf_counter() - t)
print(json.dumps({"import": t_import, "panel": times[0], "panel_again": times[1]}))
"""


def _fresh(tree: Path, cache: str, args: list[str]) -> tuple[float, str]:
    """Run python with `args` in a new process on checkout `tree` with capscale cache `cache`:
    (wall seconds, stdout)."""
    env = dict(os.environ, PYTHONPATH=str(tree), CAPSCALE_CACHE=cache)
    t = time.perf_counter()
    out = subprocess.run([sys.executable, *args], env=env, cwd=tree, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, out.stdout


def fresh_process_timings(trees: list[Path], labels: list[str], specs: list[str], rel_err: float,
                          rounds: int) -> None:
    """Cold and warm panel and `capscale gmse` wall times in new processes, alternately per tree."""
    keys = ("import", "panel cold", "panel again", "panel warm cache", "capscale gmse cold", "capscale gmse warm")
    results = {tree: {k: [] for k in keys} for tree in trees}
    panel_args = ["-c", PANEL_SCRIPT, json.dumps(specs), repr(rel_err)]
    cli_args = ["-m", "capscale", "gmse", *specs, "--rel-err", repr(rel_err)]
    for _ in range(rounds):
        for tree in trees:
            r = results[tree]
            with tempfile.TemporaryDirectory() as cache:
                cold = json.loads(_fresh(tree, cache, panel_args)[1])
                warm = json.loads(_fresh(tree, cache, panel_args)[1])
                r["import"].append(cold["import"])
                r["panel cold"].append(cold["panel"])
                r["panel again"].append(cold["panel_again"])
                r["panel warm cache"].append(warm["panel"])
            with tempfile.TemporaryDirectory() as cache:
                r["capscale gmse cold"].append(_fresh(tree, cache, cli_args)[0])
                r["capscale gmse warm"].append(_fresh(tree, cache, cli_args)[0])
    print(f"\nfresh processes, {rounds} rounds alternating, median (min-max) seconds:")
    print(f"{'':<20}" + "".join(f"{label[-28:]:>30}" for label in labels))
    for k in keys:
        cells = []
        for tree in trees:
            v = sorted(results[tree][k])
            cells.append(f"{v[len(v) // 2]:.2f} ({v[0]:.2f}-{v[-1]:.2f})")
        print(f"{k:<20}" + "".join(f"{c:>30}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--specs", nargs="*", default=list(STANDARD_PANEL))
    ap.add_argument("--rel-err", type=float, default=1e-3)
    ap.add_argument("--no-before", action="store_true", help="time the current probe only")
    ap.add_argument("--processes", type=int, default=0, metavar="N",
                    help="instead: N rounds of cold and warm timings in fresh processes")
    ap.add_argument("--against", type=Path, default=None, metavar="DIR",
                    help="with --processes: also time the capscale checkout in DIR, alternately")
    ap.add_argument("--label", default=None, help="the name of the --against checkout in the table (default: DIR)")
    args = ap.parse_args()
    if args.processes:
        trees = [Path(__file__).resolve().parent.parent] + ([args.against.resolve()] if args.against else [])
        labels = ["this checkout"] + ([args.label or str(args.against)] if args.against else [])
        specs = [] if args.specs == list(STANDARD_PANEL) else args.specs
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, rel_err {args.rel_err:g}, "
              f"{len(args.specs)} formats")
        fresh_process_timings(trees, labels, specs, args.rel_err, args.processes)
        return
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
