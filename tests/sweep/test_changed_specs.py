"""A folder holds one spec's runs: a changed spec is refused (never reported as the spec's
runs), a second launch of other runs on a busy folder is refused, and a worker trains the
runs of the launch that started it, whatever another launch writes meanwhile."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capscale.cli import main
from capscale.errors import CapscaleError
from capscale.sweep import load_spec, run_sweep
from capscale.sweep.state import runs_key, write_manifest
from capscale.sweep.worker import LaunchLock, run_config

ROOT = Path(__file__).resolve().parents[2]

SPEC = """
name = "tiny"
[sizes]
tiny = {{n_layer = 1, n_embd = 32, n_head = 1}}
[grid]
size = ["tiny"]
formats = ["none", "int8"]
[train]
tokenizer = "train:spm:512"
seq_len = 32
batch_tokens = 256
steps = {steps}
val_tokens = {val_tokens}
{extra}
"""


def _spec(tmp_path, name="a.toml", steps=3, val_tokens=512, extra=""):
    path = tmp_path / name
    path.write_text(SPEC.format(steps=steps, val_tokens=val_tokens, extra=extra))
    return path


def test_a_finished_sweep_whose_spec_changed_is_refused(tmp_path, capsys):
    """Finding: adding ``lr = 0.01`` to [train] of a finished sweep reported every run as
    finished, with the old learning rate's losses in runs.csv."""
    root = tmp_path / "runs"
    a = _spec(tmp_path)
    assert main(["sweep", str(a), "-o", str(root), "--quiet", "--threads", "1"]) == 0
    runs_csv = (root / "runs.csv").read_text()
    b = _spec(tmp_path, "b.toml", extra="lr = 0.01")
    capsys.readouterr()
    for flags in ([], ["--collect"], ["--dry-run"]):
        assert main(["sweep", str(b), "-o", str(root), "--quiet", *flags]) == 2
        err = capsys.readouterr().err
        assert "lr: folder None, spec 0.01" in err and "2 run folder(s)" in err, err
        assert "Traceback" not in err
    assert (root / "runs.csv").read_text() == runs_csv  # nothing rewritten
    with pytest.raises(CapscaleError, match="spec changed"):
        run_sweep(load_spec(b), root, quiet=True)
    # the unchanged spec still runs (nothing to do)
    assert main(["sweep", str(a), "-o", str(root), "--quiet"]) == 0


def test_an_unfinished_run_of_a_changed_spec_is_one_message(tmp_path, capsys):
    root = tmp_path / "runs"
    a = _spec(tmp_path)
    spec = load_spec(a)
    run = spec.runs[0]
    (root / run.name).mkdir(parents=True)
    cfg = run.config.to_dict()
    cfg["val_tokens"] = 1024
    (root / run.name / "config.json").write_text(json.dumps({"config": cfg}))
    assert main(["sweep", str(a), "-o", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "val_tokens: folder 1024, spec 512" in err and "Traceback" not in err


def test_a_second_launch_of_other_runs_is_refused_while_the_first_lives(tmp_path):
    root = tmp_path / "runs"
    a, b = load_spec(_spec(tmp_path)), load_spec(_spec(tmp_path, "b.toml", val_tokens=1024))
    same = load_spec(_spec(tmp_path, "a2.toml"))
    assert runs_key(a) == runs_key(same) != runs_key(b)
    root.mkdir()
    with LaunchLock(root, runs_key(a), "spec a"):
        with pytest.raises(CapscaleError, match="in use by a launch of other runs.*spec a"):
            run_sweep(b, root, quiet=True)
        with LaunchLock(root, runs_key(same), "spec a again"):  # the same runs may share it
            pass
    with LaunchLock(root, runs_key(b), "spec b"):  # the first launch ended: its lock is gone
        pass


def test_a_launch_killed_leaves_no_lock_behind(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    code = ("import os, sys; from capscale.sweep.worker import LaunchLock; "
            f"LaunchLock({str(root)!r}, 'k1', 'x').acquire(); os.kill(os.getpid(), 9)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (root / ".launches" / "k1.lock").exists()
    with LaunchLock(root, "k2", "y"):
        pass
    assert not (root / ".launches" / "k1.lock").exists()


def test_a_worker_trains_the_config_of_its_own_launch(tmp_path):
    """Finding: each launch rewrote the shared sweep.json that every worker read, so a worker
    of one launch could train another launch's settings."""
    root = tmp_path / "runs"
    a, b = load_spec(_spec(tmp_path)), load_spec(_spec(tmp_path, "b.toml", val_tokens=1024))
    manifest_a = write_manifest(a, root)
    write_manifest(b, root)  # another launch, later: sweep.json now describes b
    assert json.loads((root / "sweep.json").read_text())["runs_key"] == runs_key(b)
    name = a.runs[0].name
    assert run_config(manifest_a, name).val_tokens == 512
    before = manifest_a.read_bytes()
    write_manifest(a, root)  # a relaunch of a leaves its manifest as it was
    assert manifest_a.read_bytes() == before


@pytest.mark.slow
def test_two_launches_at_once(tmp_path):
    """Fault injection: two launches of different specs at once on one folder (one refused,
    nothing mixed), then two of the same spec at once (both succeed, every run trained once)."""
    root = tmp_path / "runs"
    a = _spec(tmp_path, steps=40)
    b = _spec(tmp_path, "b.toml", steps=40, val_tokens=1024)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def launch(spec):
        return subprocess.Popen([sys.executable, "-m", "capscale", "sweep", str(spec), "-o",
                                 str(root), "--threads", "1", "--quiet"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    first = launch(a)
    deadline = time.monotonic() + 120
    while not list(root.glob("*/config.json")):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = launch(b)
    out2, _ = second.communicate(timeout=120)
    out1, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out1
    assert second.returncode == 2 and "in use by a launch of other runs" in out2, out2
    for cfg in root.glob("*/config.json"):
        assert json.loads(cfg.read_text())["config"]["val_tokens"] == 512

    # the same spec twice at once, on a fresh folder: each run is trained by one of them
    root2 = tmp_path / "runs2"
    procs = [subprocess.Popen([sys.executable, "-m", "capscale", "sweep", str(a), "-o",
                               str(root2), "--threads", "1", "--quiet"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    for log in root2.glob("*/train.log"):
        assert log.read_text().count("start or resume") in (1, 2)
    for run_dir in root2.glob("*/"):
        if (run_dir / "metrics.jsonl").exists():
            steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                     if json.loads(line)["kind"] == "train"]
            assert steps == sorted(set(steps)), steps  # no step written twice
