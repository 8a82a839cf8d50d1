"""Fault injection: a training run SIGKILLed at random moments, many times over (checkpoints
every step, so many kills land inside a checkpoint write), resumed each time, ends
bit-identical to an uninterrupted run, with the same metrics log. Prints what it did."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capscale.train import load_result, read_metrics

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMING = ("elapsed_s", "tokens_per_s")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _metrics(run):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run)]


def _stamp(run: Path):
    paths = [run / "metrics.jsonl", run / "checkpoints" / "latest"]
    return tuple(p.stat().st_mtime_ns if p.exists() else 0 for p in paths)


@pytest.mark.slow
def test_random_sigkills_during_training(tmp_path, capsys):
    common = ["--w", "int4:had", "--a", "noise0.005", "--steps", "24", "--ckpt-every", "1",
              "--eval-every", "7"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, str(WORKER), "--out", str(full), *common], env=_env(),
                   check=True, capture_output=True, timeout=600)
    rng = random.Random(int(os.environ.get("CAPSCALE_FUZZ_SEED", "13")))
    run = tmp_path / "killed"
    starts = kills = in_checkpoint = 0
    while load_result(run) is None:
        assert starts < 60, "the run never finished"
        before = _stamp(run)
        proc = subprocess.Popen([sys.executable, str(WORKER), "--out", str(run), *common,
                                 "--resume"], env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        starts += 1
        deadline = time.monotonic() + 300
        while _stamp(run) == before and proc.poll() is None:  # training has begun
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if proc.returncode not in (0, -signal.SIGKILL):
            pytest.fail(proc.stderr.read().decode()[-2000:])
        ckpts = run / "checkpoints"
        if ckpts.exists() and any(p.name.startswith(".") for p in ckpts.iterdir()):
            in_checkpoint += 1
    a, b = load_result(full), load_result(run)
    assert b["loss"] == a["loss"] and b["final_train_loss"] == a["final_train_loss"]
    assert _metrics(run) == _metrics(full)
    with capsys.disabled():
        print(f"\n[fault injection] training: {starts} starts, {kills} SIGKILLs "
              f"({in_checkpoint} inside a checkpoint write), final loss bit-identical, "
              "metrics identical")
