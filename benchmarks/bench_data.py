"""Data layer: preparing the default token cache from scratch, tokenization throughput against
bare SentencePiece, and batch sampling against a minimal nanoGPT-style sampler.

    python benchmarks/bench_data.py [--data builtin:wiki] [--tokenizer train:spm:4096]

Everything runs in one process on a fresh temporary cache; ratios compare our path with the
baseline measured right beside it (best of --repeats, the two run alternately). The
tokenizer is SentencePiece only (train:spm or spm: or builtin:mistral-v1).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def best_pair(ours, baseline, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` times of two functions, run alternately so that drift in the
    machine's load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((ours, times[0]), (baseline, times[1])):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return min(times[0]), min(times[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="builtin:wiki")
    ap.add_argument("--tokenizer", default="train:spm:4096")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()

    import torch

    from capscale.data import BatchSampler, prepare_tokens
    from capscale.data.sources import parse_source
    from capscale.data.tokens import _tokenize

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        td = prepare_tokens(args.data, args.tokenizer, cache_dir=tmp, progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepare_tokens(args.data, args.tokenizer, cache_dir=tmp, progress=False)
        hit = time.perf_counter() - t0
        m = td.meta
        print(f"source {args.data} x tokenizer {args.tokenizer}: {m['documents']['total']} docs, "
              f"{sum(m['text_bytes'].values()) / 1e6:.2f} MB of text, "
              f"{m['tokens']['total']:,} tokens (train {m['tokens']['train']:,}, "
              f"val {m['tokens']['val']:,}), vocab {td.vocab_size}, {m['dtype']}")
        print(f"prepare from scratch (text extraction, tokenizer training, tokenization, split, "
              f"write): {cold:.2f} s; cache hit: {hit * 1e3:.1f} ms")

        # tokenization: our pass (encode, EOS, write) vs bare SentencePiece on the same documents
        source = parse_source(args.data)
        docs = list(source.documents())
        tok = td.tokenizer
        ours, bare = best_pair(
            lambda: _tokenize(source, tok, Path(tmp) / "bench.bin", td.train.dtype, None, False),
            lambda: tok._sp.encode(docs), args.repeats)
        n = m["tokens"]["total"]
        mb = sum(m["text_bytes"].values()) / 1e6
        print(f"tokenize (cached text): ours {n / ours / 1e6:.2f} M tokens/s ({mb / ours:.1f} MB/s)"
              f", bare SentencePiece batch encode {n / bare / 1e6:.2f} M tokens/s; ratio ours/bare "
              f"time {ours / bare:.2f}x")

        # batches: ours vs a nanoGPT-style sampler (random offsets, torch.stack of slices)
        b, t = args.batch_size, args.seq_len
        sampler = BatchSampler(td.train, b, t, seed=0)
        data = td.train
        gen = torch.Generator().manual_seed(0)

        def nanogpt_batch():
            ix = torch.randint(len(data) - t, (b,), generator=gen)
            x = torch.stack([torch.from_numpy(data[i:i + t].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + t].astype(np.int64)) for i in ix])
            return x, y

        steps = 200
        ours_s, base_s = (t / steps for t in best_pair(
            lambda: [sampler.batch(i) for i in range(steps)],
            lambda: [nanogpt_batch() for _ in range(steps)], args.repeats))
        print(f"batch [{b} x {t}]: ours {ours_s * 1e6:.0f} us, nanoGPT-style {base_s * 1e6:.0f} us; "
              f"ratio ours/baseline time {ours_s / base_s:.2f}x "
              f"({b * t / ours_s / 1e6:.1f} M tokens/s)")


if __name__ == "__main__":
    main()
