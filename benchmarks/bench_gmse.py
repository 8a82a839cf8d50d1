"""The standard panel's GMSE end to end: the capacity probe (exact integrals where the grid
allows, Monte Carlo with a control variate elsewhere) against the straightforward estimator
(Monte Carlo ratio of sums everywhere), both to the same 1e-3 relative standard error, run
alternately in one process.

    python benchmarks/bench_gmse.py [--specs int4 nf4 ...] [--rel-err 1e-3]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from capscale.capacity import gmse
from capscale.capacity.probe import DEFAULT_SHAPE
from capscale.capacity.table import STANDARD_PANEL
from capscale.formats import parse_format


def naive_gmse(spec: str, rel_err: float, shape=DEFAULT_SHAPE, seed: int = 0, min_tensors: int = 4) -> tuple[float, int]:
    """Σ‖x̂ − x‖² / Σ‖x‖² over tensors until the delta-method standard error is small enough."""
    f = parse_format(spec)
    gen = torch.Generator().manual_seed(seed)
    errs, sqs = [], []
    torch.manual_seed(seed)
    while True:
        x = torch.randn(*shape, generator=gen)
        errs.append(float((f.quantize(x) - x).double().square().sum()))
        sqs.append(float(x.double().square().sum()))
        n = len(errs)
        if n >= min_tensors:
            r = sum(errs) / sum(sqs)
            mean_s = sum(sqs) / n
            var = sum((e - r * s) ** 2 for e, s in zip(errs, sqs)) / (n - 1)
            if math.sqrt(var / n) / mean_s <= rel_err * r or n >= 256:
                return r, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--specs", nargs="*", default=list(STANDARD_PANEL))
    ap.add_argument("--rel-err", type=float, default=1e-3)
    args = ap.parse_args()
    for spec in args.specs:  # build code books and caches outside the timings
        gmse(spec, shape=(8, 4096), rel_err=0.5)
    t_ours = t_naive = 0.0
    worst = 0.0
    for spec in args.specs:
        t = time.perf_counter()
        ours = gmse(spec, rel_err=args.rel_err)
        t_ours += time.perf_counter() - t
        t = time.perf_counter()
        naive, _ = naive_gmse(spec, args.rel_err)
        t_naive += time.perf_counter() - t
        worst = max(worst, abs(ours.gmse - naive) / ours.gmse)
        print(f"{spec:<22} ours {ours.gmse:.6g} ({ours.method}), straightforward {naive:.6g}")
    print(f"\n{len(args.specs)} formats: ours {t_ours:.1f} s, straightforward {t_naive:.1f} s, "
          f"ratio {t_ours / t_naive:.2f}x; largest relative difference {worst:.1e}")


if __name__ == "__main__":
    main()
