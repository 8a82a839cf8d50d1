"""Shared machinery of the CPU training experiments (exp_*.py): launch ``capscale train`` runs
as subprocesses, a few at a time, into resumable run folders, and tabulate their losses."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Config:
    """One row of an experiment's table: a representation, its rule and the seeds to run."""

    label: str
    w: str = "none"
    a: str = "none"
    grad: str = "trust"
    seeds: tuple[int, ...] = (0,)
    flags: tuple[str, ...] = ()  # further `capscale train` flags (--arch, --size)


def add_arguments(p: argparse.ArgumentParser, root: str, size: str, tokens: int) -> None:
    p.add_argument("--root", default=root, help="where the run folders go (re-running resumes)")
    p.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each")
    p.add_argument("--size", default=size)
    p.add_argument("--data", default="builtin:wiki")
    p.add_argument("--tokenizer", default="train:spm:4096")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-tokens", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=tokens)
    p.add_argument("--table-only", action="store_true", help="print the table of finished runs")


def run_dir(root: Path, label: str, seed: int) -> Path:
    safe = label.replace("lsq+", "lsqplus").replace(" ", "_").replace(":", "-").replace("+", "")
    return root / f"{safe}-s{seed}"


def launch(args, cfg: Config, seed: int) -> str:
    out = run_dir(Path(args.root), cfg.label, seed)
    cmd = [sys.executable, "-m", "capscale", "train", "--size", args.size, "--w", cfg.w, "--a", cfg.a,
           "--grad", cfg.grad, "--seed", str(seed), "--data", args.data, "--tokenizer", args.tokenizer,
           "--seq-len", str(args.seq_len), "--batch-tokens", str(args.batch_tokens),
           "--tokens", str(args.tokens), "--val-tokens", "1M", "--eval-every", "1000000",
           "--out", str(out), "--resume", "--no-progress", *cfg.flags]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or ["?"])[-1]
    print(f"{cfg.label} seed {seed}: {last}" if done.returncode == 0
          else f"{cfg.label} seed {seed}: FAILED\n{done.stderr[-2000:]}", flush=True)
    return last


def run_all(args, configs: list[Config]) -> None:
    """Every configuration's first seed before any second seed, ``--workers`` at a time."""
    jobs = sorted(((c, s) for c in configs for s in c.seeds), key=lambda j: j[1])
    with ThreadPoolExecutor(args.workers) as pool:
        list(pool.map(lambda j: launch(args, *j), jobs))


def losses(args, cfg: Config) -> tuple[list[float], dict | None]:
    """Final validation losses of the finished seeds, and one result record."""
    from capscale.train import load_result

    results = [load_result(run_dir(Path(args.root), cfg.label, s)) for s in cfg.seeds]
    results = [r for r in results if r is not None and r["loss"] is not None]
    return [r["loss"] for r in results], (results[0] if results else None)


def mean_sd(values: list[float]) -> str:
    sd = f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else ""
    return f"{np.mean(values):.4f}{sd}"


def unigram_entropy(data: str, tokenizer: str) -> float:
    """Cross-entropy of the validation split under the training split's token frequencies."""
    from capscale.data import prepare_tokens

    td = prepare_tokens(data, tokenizer, progress=False)
    p = np.bincount(np.asarray(td.train), minlength=td.vocab_size) / len(td.train)
    q = np.bincount(np.asarray(td.val), minlength=td.vocab_size) / len(td.val)
    p = np.maximum(p, 1e-12)
    return float(-(q * np.log(p)).sum())
