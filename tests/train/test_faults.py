"""Faults a run must survive: a bad setting refused before anything is written, leftovers of
a killed write, a checkpoint pointer naming a missing step, damaged checkpoints, a full disk;
and a resumed run's metrics equal to an uninterrupted run's."""

import errno
import json
import shutil

import pytest
import torch
from synthetic import synthetic_data

from capscale.errors import CapscaleError
from capscale.train import TrainConfig, load_result, read_metrics, train

TIMING = ("elapsed_s", "tokens_per_s")


def _cfg(out, **kw):
    base = dict(size="30k", seq_len=32, batch_tokens=32 * 16, steps=24, ckpt_every=6,
                eval_every=8, val_tokens=2048, out=str(out), progress=False, log_every=4,
                w_format="int4", a_format="noise0.005", keep_checkpoints=10)
    base.update(kw)
    return TrainConfig(**base)


def _train(cfg, resume=False):
    torch.set_num_threads(1)
    return train(cfg, data=synthetic_data(), resume=resume)


def _metrics(run_dir):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(run_dir)]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted run, with every checkpoint kept."""
    out = tmp_path_factory.mktemp("full") / "run"
    return out, _train(_cfg(out))


def _interrupted_copy(full, tmp_path, step):
    """The full run as a kill after the checkpoint of ``step`` would have left it (later
    checkpoints gone, no result)."""
    src, _ = full
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    (dst / "result.json").unlink()
    for ckpt in (dst / "checkpoints").glob("step_*"):
        if int(ckpt.name.split("_")[1]) > step:
            shutil.rmtree(ckpt)
    (dst / "checkpoints" / "latest").write_text(f"step_{step:07d}\n")
    return dst


def test_a_format_that_does_not_fit_the_model_writes_nothing(tmp_path):
    """Finding: nvfp4 at width 24 wrote config.json before failing at the first step; the
    same command with valid flags then said "already holds a run"."""
    out = tmp_path / "run"
    with pytest.raises(CapscaleError, match="groups of 16 need the last dimension"):
        _train(_cfg(out, size=None, n_layer=1, n_embd=24, n_head=2, w_format="nvfp4"))
    assert not out.exists()
    assert _train(_cfg(out, size=None, n_layer=1, n_embd=24, n_head=2, w_format="int4",
                       steps=2))["status"] == "finished"


def test_a_folder_without_a_started_run_is_not_a_run(tmp_path, full):
    run = _interrupted_copy(full, tmp_path, 6)
    shutil.rmtree(run / "checkpoints")  # killed (or failed) before its first checkpoint
    result = _train(_cfg(run, lr=2e-3, steps=4))  # other settings, no --resume: starts afresh
    assert result["status"] == "finished" and result["lr"] == 2e-3
    assert json.loads((run / "config.json").read_text())["config"]["lr"] == 2e-3
    with pytest.raises(CapscaleError, match="already holds a run"):
        _train(_cfg(run, steps=4))


def test_foreign_or_file_outputs_are_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CapscaleError, match="is a file"):
        _train(_cfg(tmp_path / "f"))
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "config.json").write_text('{"model": "bert"}')
    with pytest.raises(CapscaleError, match="not the config of a capscale run"):
        _train(_cfg(tmp_path / "g"))
    (tmp_path / "g" / "config.json").write_text("{")
    with pytest.raises(CapscaleError, match="not valid JSON"):
        _train(_cfg(tmp_path / "g"))


def test_resume_metrics_equal_an_uninterrupted_runs(tmp_path, full):
    """Finding: the train-loss window restarted at the checkpoint, so the first log line after
    a resume averaged fewer steps than the uninterrupted run's (checkpoints every 6 steps,
    logs every 4)."""
    run = _interrupted_copy(full, tmp_path, 6)
    result = _train(_cfg(run), resume=True)
    assert result["loss"] == full[1]["loss"]
    assert _metrics(run) == _metrics(full[0])


def test_leftovers_of_a_killed_write_are_removed_at_the_next_start(tmp_path, full):
    run = _interrupted_copy(full, tmp_path, 12)
    leftovers = [run / ".config.json.k2j3.tmp", run / ".result.json.x.tmp",
                 run / "checkpoints" / ".latest.abc.tmp", run / ".metrics.jsonl.q.tmp"]
    for p in leftovers:
        p.write_text("half")
    (run / "checkpoints" / ".tmp-step_0000018").mkdir()
    (run / "checkpoints" / ".tmp-step_0000018" / "model.safetensors").write_bytes(b"\0" * 100)
    _train(_cfg(run), resume=True)
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_resume_uses_the_newest_complete_checkpoint(tmp_path, full):
    """Finding: when checkpoints/latest named a missing step the run restarted from step 0
    although a good checkpoint existed."""
    run = _interrupted_copy(full, tmp_path, 18)
    (run / "checkpoints" / "latest").write_text("step_0000024\n")  # named, never completed
    (run / "checkpoints" / "step_0000012" / "optimizer.pt").unlink()  # an incomplete one
    kept = run / "checkpoints" / "step_0000006" / "state.json"
    before = kept.stat().st_mtime_ns
    assert _train(_cfg(run), resume=True)["loss"] == full[1]["loss"]
    assert kept.stat().st_mtime_ns == before  # continued from step 18, not restarted
    first_train = [m for m in read_metrics(run) if m["kind"] == "train"]
    assert [m["step"] for m in first_train] == [m["step"] for m in read_metrics(full[0])
                                                if m["kind"] == "train"]


@pytest.mark.parametrize("damage", ["truncated weights", "empty optimizer", "bad json",
                                    "bad rng"])
def test_a_damaged_checkpoint_falls_back_to_the_previous_one(tmp_path, full, damage, capsys):
    run = _interrupted_copy(full, tmp_path, 18)
    newest = run / "checkpoints" / "step_0000018"
    if damage == "truncated weights":
        data = (newest / "model.safetensors").read_bytes()
        (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "empty optimizer":
        (newest / "optimizer.pt").write_bytes(b"")
    elif damage == "bad json":
        (newest / "state.json").write_text("{")
    else:
        torch.save({"torch": torch.zeros(3, dtype=torch.uint8)}, newest / "rng_rank0.pt")
    assert _train(_cfg(run), resume=True)["loss"] == full[1]["loss"]
    assert "skipping damaged checkpoint" in capsys.readouterr().err
    # nothing loadable at all: one message naming the file, no traceback
    for ckpt in (run / "checkpoints").glob("step_*"):
        (ckpt / "state.json").write_text("[]")
    (run / "result.json").unlink()
    with pytest.raises(CapscaleError, match="state.json is damaged"):
        _train(_cfg(run), resume=True)


def test_a_full_disk_names_the_cause_and_leaves_no_partial_checkpoint(tmp_path, full, monkeypatch):
    """Finding: a full disk said "unexpected pos 418304" and left a partial checkpoint folder
    filling it. ENOSPC is injected into the weights' write of the third checkpoint."""
    import safetensors.torch as st

    real, calls = st.save_file, []

    def save_file(tensors, path, *a, **k):
        calls.append(path)
        if len(calls) == 3:
            with open(path, "wb") as f:
                f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(st, "save_file", save_file)
    run = tmp_path / "run"
    with pytest.raises(CapscaleError, match="disk is full.*resume from its previous checkpoint"):
        _train(_cfg(run))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "latest", "step_0000006", "step_0000012"]
    monkeypatch.setattr(st, "save_file", real)  # space freed
    assert _train(_cfg(run), resume=True)["loss"] == full[1]["loss"]
    assert _metrics(run) == _metrics(full[0])
    assert load_result(run)["D"] == full[1]["D"]
