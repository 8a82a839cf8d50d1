"""Quantize throughput of formats, measured alternately in one process.

Default: the float32 fast path of the scale-then-grid formats against the float64 reference it
reproduces bit for bit (``reference_arithmetic()``) and against the float32 kernels from before
the formats were made exact (one rounding from the exact quotient: commit 7189363, re-created
below for these formats), on a 4096 × 4096 weight and on a training step's activations (16
sequences of 256 tokens × 256 features, the 5M rung), plus one training step of the 5M model
with int4 weights and activations, fast path against reference.

    python benchmarks/bench_quantize.py [--repeats 5] [--threads N]
    python benchmarks/bench_quantize.py --throughput [--values 16777216] [--specs ...]
    python benchmarks/bench_quantize.py --cpu-ladder [--repeats 15] [--threads 1]

``--cpu-ladder``: one training step of the CPU ladder's width-32 model (8 sequences of 128
tokens, vocabulary 512) with INT8/INT4/INT2 weights and activations, as the studies train it
(tensors under ``fastpath.MIN_FAST_NUMEL`` values take the float64 reference) against the fast
path forced onto every tensor, and against the dense step.

``--throughput``: the older table, each format as a ratio to a plain torch.round of the same
tensor.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from capscale.formats import parse_format
from capscale.formats.base import group_view, masked_absmax, masked_rms
from capscale.formats.block import E2M1, E4M3, MX_ELEMENTS, MXQuantizer, NVFP4Quantizer, floor_log2
from capscale.formats.fastpath import reference_arithmetic
from capscale.formats.rounding import round_fp, round_to_grid
from capscale.formats.scalar import FPQuantizer, IntQuantizer, NF4Quantizer

SPECS = ["int4", "int4:had", "mxfp4", "nvfp4", "sparse0.5+int4", "vq4:b8"]
PATH_SPECS = ["int4", "int8", "e4m3:absmax:tensor", "nf4", "mxfp4", "nvfp4"]


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (also builds any cached code book)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# --- the float32 kernels before exact rounding (commit 7189363), for PATH_SPECS ---------------

def legacy(spec: str):
    """x ↦ x̂ as the formats computed it in float32 before each value was rounded once from the
    exact quotient (a reciprocal of the scale, then a product: two roundings)."""
    part = parse_format(spec).parts[0]

    def scalar(x):
        xv = group_view(x, part.scaling.group, spec)
        s = masked_rms(xv, None) * part.alpha if part.scaling.rule == "rms" else masked_absmax(xv, None)
        zero = torch.zeros((), dtype=s.dtype)
        if isinstance(part, IntQuantizer):
            h = 2**part.n_bits - 1
            t = torch.addcmul(torch.tensor(h / 2 + 0.5, dtype=xv.dtype), xv, torch.where(s > 0, (h / 2) / s, zero))
            t.floor_().clamp_(0, h)
            q = torch.addcmul(-s, t, s * (2 / h))
        else:
            inv = torch.where(s > 0, 1.0 / s, zero)
            if isinstance(part, FPQuantizer):
                m = part.fp.max_value
                q = (round_fp(xv * inv * m, part.fp) / m).mul_(s)
            else:
                q = round_to_grid(xv * inv, torch.as_tensor(part.levels, dtype=xv.dtype)).mul_(s)
        return q.reshape(x.shape)

    def mx(x):
        fp, emax, _ = MX_ELEMENTS[part.element]
        xv = group_view(x, part.block, spec)
        amax = masked_absmax(xv, None)
        shared = (floor_log2(torch.where(amax > 0, amax, torch.ones_like(amax))) - emax).clamp_(-127, 127)
        scale = torch.ldexp(torch.ones_like(amax), shared.to(torch.int32))
        q = round_fp(xv / scale, fp)
        return torch.where(amax > 0, q * scale, torch.zeros((), dtype=q.dtype)).reshape(x.shape)

    def nvfp4(x):
        xv = group_view(x, 16, spec)
        amax_block = masked_absmax(xv, None)
        g = (amax_block.max() / (6.0 * E4M3.max_value)).to(torch.float32)
        s = round_fp(amax_block / (6.0 * g), E4M3)
        denom = torch.where(s > 0, s * g, torch.ones_like(s))
        q = round_fp((xv / denom).clamp_(-6.0, 6.0), E2M1) * denom
        return torch.where(s > 0, q, torch.zeros((), dtype=q.dtype)).reshape(x.shape)

    if isinstance(part, (IntQuantizer, FPQuantizer, NF4Quantizer)):
        return scalar
    if isinstance(part, MXQuantizer):
        return mx
    if isinstance(part, NVFP4Quantizer):
        return nvfp4
    raise ValueError(f"no pre-exactness kernel for {spec}")


def training_step(size: str = "5M", w: str = "int4", a: str = "int4"):
    from capscale.model import Llama, compress_model, config_for_size

    cfg = config_for_size(size, 4096, 256)
    torch.manual_seed(0)
    model = Llama(cfg)
    compress_model(model, w, a, grad_rule="trust")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 4096, (16, 256))
    y = torch.randint(0, 4096, (16, 256))

    def step():
        model(x, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def paths(args) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}, "
          "fast path vs float64 reference vs pre-exactness float32 kernels, alternately")
    print(f"{'format':<20} {'shape':<13} {'fast (s)':>9} {'ref (s)':>9} {'old (s)':>9} "
          f"{'ref/fast':>9} {'old/fast':>9}")
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4096, 4096, generator=g), torch.randn(16 * 256, 256, generator=g)]
    for x in tensors:
        for spec in args.specs or PATH_SPECS:
            f = parse_format(spec)
            old = legacy(spec)
            fast, ref, before = [], [], []
            f.quantize(x)  # warm-up
            old(x)
            for _ in range(args.repeats):
                t = time.perf_counter()
                f.quantize(x)
                fast.append(time.perf_counter() - t)
                with reference_arithmetic():
                    t = time.perf_counter()
                    f.quantize(x)
                    ref.append(time.perf_counter() - t)
                t = time.perf_counter()
                old(x)
                before.append(time.perf_counter() - t)
            tf, tr, to = (statistics.median(v) for v in (fast, ref, before))
            shape = "x".join(map(str, x.shape))
            print(f"{spec:<20} {shape:<13} {tf:9.4f} {tr:9.4f} {to:9.4f} {tr / tf:8.1f}x {to / tf:8.1f}x",
                  flush=True)
    step = training_step()
    step()
    fast, ref = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        step()
        fast.append(time.perf_counter() - t)
        with reference_arithmetic():
            t = time.perf_counter()
            step()
            ref.append(time.perf_counter() - t)
    tf, tr = statistics.median(fast), statistics.median(ref)
    print(f"training step, 5M model, int4 W+A, 16 x 256 tokens: fast {tf:.3f} s, reference {tr:.3f} s, "
          f"ratio {tr / tf:.2f}x")


def cpu_ladder(args) -> None:
    from capscale.formats import fastpath
    from capscale.model import Llama, compress_model, config_for_size

    cfg = config_for_size("cpu-w32", 512, 128)
    x = torch.randint(0, 512, (8, 128))
    y = torch.randint(0, 512, (8, 128))
    steps = {}
    for spec in ("none", "int8", "int4", "int2"):
        torch.manual_seed(0)
        model = Llama(cfg)
        compress_model(model, spec, spec, grad_rule="trust")
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            model(x, y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        steps[spec] = step
    default = fastpath.MIN_FAST_NUMEL
    times: dict = {}
    for _ in range(args.repeats + 1):  # the first round warms up
        for spec, step in steps.items():
            for label, threshold in (("default", default), ("all fast", 0)):
                if spec == "none" and label != "default":
                    continue
                fastpath.MIN_FAST_NUMEL = threshold
                t = time.perf_counter()
                step()
                times.setdefault((spec, label), []).append(time.perf_counter() - t)
    fastpath.MIN_FAST_NUMEL = default
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    dense = med[("none", "default")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}: "
          f"one training step of cpu-w32 (8 x 128 tokens), dense {dense * 1e3:.1f} ms")
    for spec in ("int8", "int4", "int2"):
        d, f = med[(spec, "default")], med[(spec, "all fast")]
        print(f"  {spec} W+A: {d * 1e3:.1f} ms ({d / dense:.2f}x dense); fast path on every tensor "
              f"{f * 1e3:.1f} ms ({f / dense:.2f}x dense): {f / d:.2f}x the default")


def throughput(args) -> None:
    x = torch.randn(args.values // args.cols, args.cols)
    print(f"{x.numel():,} float32 values as {tuple(x.shape)}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'format':<18} {'ours (s)':>9} {'round (s)':>9} {'Mvalues/s':>10} {'ratio':>7}")
    for spec in args.specs or SPECS:
        f = parse_format(spec)
        ours = timed(lambda f=f: f.quantize(x), args.repeats)
        base = timed(lambda: torch.round(x), args.repeats)
        print(f"{spec:<18} {ours:9.4f} {base:9.4f} {x.numel() / ours / 1e6:10.1f} {ours / base:6.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--throughput", action="store_true", help="the ratio-to-round table")
    ap.add_argument("--cpu-ladder", action="store_true",
                    help="a CPU-ladder training step: small tensors on the reference or all fast")
    ap.add_argument("--values", type=int, default=1 << 24)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--specs", nargs="*", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    (throughput if args.throughput else cpu_ladder if args.cpu_ladder else paths)(args)


if __name__ == "__main__":
    main()
