"""Quantize throughput of formats on 16M values, as a ratio to a plain torch.round of the same
tensor, measured alternately in one process.

    python benchmarks/bench_quantize.py [--values 16777216] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from capscale.formats import parse_format

SPECS = ["int4", "int4:had", "mxfp4", "nvfp4", "sparse0.5+int4", "vq4:b8"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (also builds any cached code book)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--values", type=int, default=1 << 24)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--specs", nargs="*", default=SPECS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x = torch.randn(args.values // args.cols, args.cols)
    print(f"{x.numel():,} float32 values as {tuple(x.shape)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'format':<18} {'ours (s)':>9} {'round (s)':>9} {'Mvalues/s':>10} {'ratio':>7}")
    for spec in args.specs:
        f = parse_format(spec)
        ours = timed(lambda f=f: f.quantize(x), args.repeats)
        base = timed(lambda: torch.round(x), args.repeats)
        print(f"{spec:<18} {ours:9.4f} {base:9.4f} {x.numel() / ours / 1e6:10.1f} {ours / base:6.1f}x")


if __name__ == "__main__":
    main()
