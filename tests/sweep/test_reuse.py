"""--reuse: finished runs of other folders that compute exactly a pending run's settings are
copied in (atomically, without checkpoints, with their origin named) instead of trained."""

from __future__ import annotations

import json

import pytest

from capscale import runrecord
from capscale.cli import main
from capscale.errors import CapscaleError
from capscale.sweep import run_sweep, spec_from_text
from capscale.sweep.reuse import reusable, take_finished

SPEC = """
name = "reuse-test"
[grid]
size = ["30k", "100k"]
formats = ["none", "int4"]
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
tokens = 20480
"""


def _finished(folder, cfg, loss=3.0, result=True, dtype="fp32"):
    """A run folder as the trainer leaves it (config, checkpoint, result), without training."""
    folder.mkdir(parents=True)
    (folder / runrecord.CONFIG).write_text(json.dumps(
        {"config": cfg.to_dict(), "environment": {"compute_dtype": dtype}, "formats": {}}))
    (folder / runrecord.CHECKPOINTS).mkdir()
    (folder / runrecord.CHECKPOINTS / "step_20.pt").write_bytes(b"weights")
    if result:
        (folder / runrecord.RESULT).write_text(json.dumps(
            {"status": runrecord.FINISHED, "N": 1000, "D": 20480, "loss": loss,
             "w_format": cfg.w_format, "a_format": cfg.a_format, "seed": cfg.seed}))


@pytest.fixture
def spec():
    return spec_from_text(SPEC, source="reuse.toml")


def test_only_runs_of_the_same_settings_are_copied_in(tmp_path, spec):
    src, root = tmp_path / "other", tmp_path / "here"
    runs = {r.name: r.config for r in spec.runs}
    same = spec.runs[0]
    _finished(src / "any-name-at-all", same.config, loss=2.5)  # names need not match
    other_lr = spec.runs[1]
    _finished(src / "b", type(other_lr.config)(**{**other_lr.config.to_dict(), "lr": 0.5}))
    _finished(src / "c", spec.runs[2].config, result=False)  # not finished
    _finished(root / spec.runs[3].name, spec.runs[3].config, loss=9.0)  # already here

    found = reusable(spec, root, [src])
    assert found == {same.name: src / "any-name-at-all"}

    # --collect writes the tables of the folders as they are: nothing is copied
    run_sweep(spec, root, reuse=[src], collect_only=True, quiet=True)
    assert not (root / same.name).exists()
    assert take_finished(found, root) == 1
    outcome = run_sweep(spec, root, collect_only=True, quiet=True)
    copied = root / same.name
    assert runrecord.read_result(copied)["loss"] == 2.5
    assert not (copied / runrecord.CHECKPOINTS).exists()
    origin = str((src / "any-name-at-all").resolve())
    assert json.loads((copied / runrecord.REUSED).read_text()) == {"from": origin,
                                                                   "trained_in": origin}
    status = dict(zip(outcome.status["name"], outcome.status["status"]))
    assert status[same.name] == runrecord.FINISHED
    assert status[spec.runs[1].name] == runrecord.PENDING  # lr differs: trained, not reused
    assert runrecord.read_result(root / spec.runs[3].name)["loss"] == 9.0  # never overwritten
    assert not list(root.glob(".*.reuse"))
    assert set(runs) >= set(status)


def test_dry_run_counts_and_copies_nothing(tmp_path, spec, capsys):
    src, root = tmp_path / "other", tmp_path / "here"
    _finished(src / "x", spec.runs[0].config)
    run_sweep(spec, root, reuse=[src], dry_run=True)
    assert "reuse: 1 pending run(s) would be copied" in capsys.readouterr().out
    assert not (root / spec.runs[0].name).exists()


def test_a_source_that_is_not_a_folder_is_named(tmp_path, spec, capsys):
    with pytest.raises(CapscaleError, match="--reuse .*missing: not a folder"):
        reusable(spec, tmp_path / "here", [tmp_path / "missing"])
    path = tmp_path / "s.toml"
    path.write_text(SPEC)
    assert main(["sweep", str(path), "--dry-run", "--reuse", str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_copies_in_progress_other_dtypes_and_copies_of_copies(tmp_path, spec):
    """A hidden half-copy in a source is never taken; a run computed in bf16 does not stand
    for one this CPU sweep computes in fp32; a copy of a copy names where it was trained."""
    src, root, third = tmp_path / "other", tmp_path / "here", tmp_path / "third"
    run = spec.runs[0]
    _finished(src / f".{run.name}.reuse", run.config, loss=1.0)
    assert reusable(spec, root, [src]) == {}
    _finished(src / "bf16", run.config, dtype="bf16")
    assert reusable(spec, root, [src]) == {}
    assert reusable(spec, root, [src], on_gpu=True) == {run.name: src / "bf16"}
    _finished(src / "fp32", run.config, loss=2.0)
    take_finished(reusable(spec, root, [src]), root)
    take_finished(reusable(spec, third, [root]), third)
    record = json.loads((third / run.name / runrecord.REUSED).read_text())
    assert record == {"from": str((root / run.name).resolve()),
                      "trained_in": str((src / "fp32").resolve())}
    (root / f".{spec.runs[1].name}.reuse").mkdir()  # a copy cut short: cleared next time
    take_finished({}, root)
    assert not list(root.glob(".*.reuse"))
