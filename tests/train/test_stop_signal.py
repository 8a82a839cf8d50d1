"""SIGUSR1 or SIGTERM (SLURM's warning before a time limit or preemption) makes a run finish
its step, checkpoint and stop without a result; resumed, it ends bit-identical to an
uninterrupted run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capscale.train import load_result

WORKER = Path(__file__).with_name("worker.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_stop_signal_checkpoints_and_the_resume_is_bit_identical(tmp_path, sig):
    from test_kill_fuzz import _env, _metrics

    common = ["--steps", "12", "--ckpt-every", "1000", "--eval-every", "5"]
    full = tmp_path / "full"
    subprocess.run([sys.executable, str(WORKER), "--out", str(full), *common], env=_env(),
                   check=True, capture_output=True, timeout=600)
    run = tmp_path / "stopped"
    proc = subprocess.Popen([sys.executable, str(WORKER), "--out", str(run), *common,
                             "--slow-after", "0"],  # 0.5 s a step: the signal lands mid-run
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (run / "metrics.jsonl").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(sig)
    err = proc.communicate(timeout=300)[1].decode()
    if load_result(run) is None:  # stopped before the end (the usual case)
        assert proc.returncode != -sig, err  # handled, not killed by the signal
        assert "received: checkpointed" in err
        assert (run / "checkpoints" / "latest").exists()
        subprocess.run([sys.executable, str(WORKER), "--out", str(run), *common, "--resume"],
                       env=_env(), check=True, capture_output=True, timeout=600)
    a, b = load_result(full), load_result(run)
    assert b["loss"] == a["loss"] and b["final_train_loss"] == a["final_train_loss"]
    assert _metrics(run) == _metrics(full)
