"""Does a tiny model on the embedded corpus reproduce the papers' ordering of formats?

Trains the same model (same N, same D, same seed set) over each representation with
``capscale train`` and prints the validation losses: dense ≈ int8 < int4 < int3 < int2 on
weights and activations, weight-only int4 better than int4 on both, sparse0.5 better than
sparse0.75, Hadamard with trust estimation better than plain STE at 2 and 3 bits. Runs are
subprocesses (``--workers`` at a time, one thread each) into run folders under ``--root``;
re-running the script resumes or skips what is done.

    python benchmarks/exp_ordering.py --root /tmp/capscale-ordering --workers 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# (label, weight format, activation format, gradient rule, seeds)
CONFIGS = [
    ("dense", "none", "none", "trust", (0, 1, 2)),
    ("int8 W+A", "int8", "int8", "trust", (0, 1, 2)),
    ("int4 W+A", "int4", "int4", "trust", (0, 1, 2)),
    ("int4 W", "int4", "none", "trust", (0, 1, 2)),
    ("int3 W+A", "int3", "int3", "trust", (0,)),
    ("int2 W+A", "int2", "int2", "trust", (0,)),
    ("sparse0.5 W", "sparse0.5", "none", "trust", (0,)),
    ("sparse0.75 W", "sparse0.75", "none", "trust", (0,)),
    ("int3:had W+A trust", "int3:had", "int3:had", "trust", (0,)),
    ("int3 W+A STE", "int3", "int3", "ste", (0,)),
    ("int2:had W+A trust", "int2:had", "int2:had", "trust", (0,)),
    ("int2 W+A STE", "int2", "int2", "ste", (0,)),
]


def run_dir(root: Path, label: str, seed: int) -> Path:
    safe = label.replace(" ", "_").replace(":", "-").replace("+", "")
    return root / f"{safe}-s{seed}"


def launch(args, label, w, a, grad, seed) -> str:
    out = run_dir(Path(args.root), label, seed)
    cmd = [sys.executable, "-m", "capscale", "train", "--size", args.size, "--w", w, "--a", a,
           "--grad", grad, "--seed", str(seed), "--data", args.data, "--tokenizer", args.tokenizer,
           "--seq-len", str(args.seq_len), "--batch-tokens", str(args.batch_tokens),
           "--tokens", str(args.tokens), "--val-tokens", "1M", "--eval-every", "1000000",
           "--out", str(out), "--resume", "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["?"])[-1]
    print(f"{label} seed {seed}: {last}" if done.returncode == 0
          else f"{label} seed {seed}: FAILED\n{done.stderr[-2000:]}", flush=True)
    return last


def unigram_entropy(data: str, tokenizer: str) -> float:
    from capscale.data import prepare_tokens

    td = prepare_tokens(data, tokenizer, progress=False)
    p = np.bincount(np.asarray(td.train), minlength=td.vocab_size) / len(td.train)
    q = np.bincount(np.asarray(td.val), minlength=td.vocab_size) / len(td.val)
    p = np.maximum(p, 1e-12)
    return float(-(q * np.log(p)).sum())  # cross-entropy of the val split under train unigrams


def table(args) -> str:
    from capscale.train import load_result

    lines = ["| representation | weights | activations | gradient rules (w; a) | seeds | "
             "val loss (mean ± sd) | per seed |", "|---|---|---|---|---|---|---|"]
    for label, w, a, _grad, seeds in CONFIGS:
        results = [load_result(run_dir(Path(args.root), label, s)) for s in seeds]
        results = [r for r in results if r is not None and r["loss"] is not None]
        if not results:
            continue
        losses = [r["loss"] for r in results]
        rules = f"{results[0].get('w_rules') or '—'}; {results[0].get('a_rules') or '—'}"
        sd = f" ± {np.std(losses, ddof=1):.4f}" if len(losses) > 1 else ""
        lines.append(f"| {label} | {w} | {a} | {rules} | {len(losses)} | {np.mean(losses):.4f}{sd} | "
                     + ", ".join(f"{x:.4f}" for x in losses) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="/tmp/capscale-ordering")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", default="100k")
    p.add_argument("--data", default="builtin:wiki")
    p.add_argument("--tokenizer", default="train:spm:4096")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=3_000_000)
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args()
    if not args.table_only:
        jobs = [(label, w, a, g, s) for label, w, a, g, seeds in CONFIGS for s in seeds]
        jobs.sort(key=lambda j: j[4])  # every configuration's first seed before any second seed
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda j: launch(args, *j), jobs))
    print(f"unigram cross-entropy of the validation split: {unigram_entropy(args.data, args.tokenizer):.4f}")
    print(table(args))


if __name__ == "__main__":
    main()
