"""Fault injection: a small sweep SIGKILLed at random moments, many times over, then resumed.
Every run finishes exactly once (a finished run's record is never rewritten) and every run's
result and metrics equal those of an uninterrupted sweep. Prints what it did."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capscale.train import load_result
from tests.train.test_kill_fuzz import _env, _metrics

SPEC = """
name = "fuzz"
[sizes]
13k = {n_layer = 1, n_embd = 32, n_head = 1}
[grid]
size = ["13k", "30k"]
formats = ["none", "int4"]
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
tokens_per_param = 2
val_tokens = 4096
eval_every = 5
ckpt_every = 2
"""


def _sweep(spec: Path, root: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "capscale", "sweep", str(spec), "-o",
                             str(root), "--jobs", "2", "--threads", "1", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stamp(root: Path):
    """What the runs have written so far: their metrics logs and latest checkpoints."""
    paths = sorted(root.glob("*/metrics.jsonl")) + sorted(root.glob("*/checkpoints/latest"))
    return tuple((str(p), p.stat().st_mtime_ns) for p in paths if p.exists())


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def _workers_gone(root: Path, timeout: float = 60) -> None:
    """Wait for the killed sweep's workers (they die with it) to release their runs."""
    deadline = time.monotonic() + timeout
    for lock in root.glob("*/.lock"):
        try:
            pid = int(lock.read_text().split()[0])
        except (ValueError, IndexError, OSError):
            continue
        while _alive(pid):
            assert time.monotonic() < deadline, f"worker {pid} outlived its sweep"
            time.sleep(0.02)


@pytest.mark.slow
def test_random_sigkills_of_a_sweep(tmp_path, capsys):
    spec = tmp_path / "fuzz.toml"
    spec.write_text(SPEC)
    env = {**_env(), "CAPSCALE_CACHE": str(tmp_path / "cache")}  # one token cache for both
    full = tmp_path / "full"
    t0 = time.monotonic()
    proc = _sweep(spec, full, env)
    assert proc.wait(timeout=900) == 0, proc.stderr.read().decode()[-2000:]
    full_s = time.monotonic() - t0
    names = sorted(p.parent.name for p in full.glob("*/result.json"))
    assert len(names) == 4

    rng = random.Random(int(os.environ.get("CAPSCALE_FUZZ_SEED", "5")))
    root = tmp_path / "killed"
    first_seen: dict[str, int] = {}  # run -> mtime of its result when it first appeared
    starts = kills = 0
    max_kills = int(os.environ.get("CAPSCALE_FUZZ_KILLS", "6"))
    while True:
        assert starts < 40, "the sweep never finished"
        proc = _sweep(spec, root, env)
        starts += 1
        if kills < max_kills:  # a random moment once this launch has begun to train
            before = _stamp(root)
            deadline = time.monotonic() + 300
            while _stamp(root) == before and proc.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None and kills < max_kills:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        rc = proc.wait(timeout=900)
        if rc not in (0, -signal.SIGKILL):
            pytest.fail(proc.stderr.read().decode()[-2000:])
        _workers_gone(root)
        for result in root.glob("*/result.json"):  # a finished run is never run again
            mtime = result.stat().st_mtime_ns
            assert first_seen.setdefault(result.parent.name, mtime) == mtime, result
        if rc == 0:
            break
    assert sorted(first_seen) == names and kills >= 3, (kills, starts)
    for name in names:
        a, b = load_result(full / name), load_result(root / name)
        assert b["status"] == a["status"] == "finished"
        assert (b["loss"], b["final_train_loss"], b["D"]) == (a["loss"], a["final_train_loss"],
                                                              a["D"]), name
        assert _metrics(root / name) == _metrics(full / name), name
    status = (root / "sweep-status.csv").read_text()
    assert status.count(",finished,") == 4
    with capsys.disabled():
        print(f"\n[fault injection] sweep: {len(names)} runs, {starts} launches, {kills} SIGKILLs "
              f"of the sweep (uninterrupted sweep {full_s:.1f}s), every run finished once, "
              "results and metrics identical to the uninterrupted sweep")
