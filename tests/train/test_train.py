import json

import pytest
from safetensors.torch import load_file
from synthetic import markov_tokens, synthetic_data, unigram_entropy

from capscale.errors import CapscaleError
from capscale.model import Llama
from capscale.train import TrainConfig, load_result, load_runs, read_metrics, result_row, train
from capscale.train.config import plan
from capscale.train.records import ROW_COLUMNS


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


def _cfg(tmp_path=None, **kw):
    base = dict(size="30k", seq_len=32, batch_tokens=32 * 16, steps=60, lr=1e-2, progress=False,
                val_tokens=2048, log_every=10)
    base.update(kw)
    if tmp_path is not None:
        base["out"] = str(tmp_path)
    return TrainConfig(**base)


def test_a_tiny_run_learns(tmp_path, data):
    result = train(_cfg(tmp_path / "run"), data=data)
    h = unigram_entropy(markov_tokens(68_000, 64), 64)  # what a model of token counts gets
    assert result["status"] == "finished"
    assert result["loss"] < 0.5 * h
    metrics = read_metrics(tmp_path / "run")
    val = [m["val_loss"] for m in metrics if m["kind"] == "val"]
    assert val == sorted(val, reverse=True) and val[-1] == result["loss"]
    assert result["N"] == 26_784 and result["D"] == 60 * 512
    assert result["tokens_per_s"] > 0 and result["wall_time_s"] > 0


def test_run_folder_contents(tmp_path, data):
    out = tmp_path / "run"
    result = train(_cfg(out, steps=10, w_format="int4", a_format="int8"), data=data)
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["w_format"] == "int4" and saved["plan"]["steps"] == 10
    assert saved["formats"]["gmse_w"] == pytest.approx(0.011543, rel=1e-3)  # INT4, QuEST grid
    assert result["gmse_a"] < result["gmse_w"] and result["bits_w"] > 4
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "model.safetensors", "optimizer.pt", "rng_rank0.pt", "state.json"]
    model = Llama(plan(_cfg(), 64).model)
    model.load_state_dict(load_file(str(ckpt / "model.safetensors")))
    assert json.loads((ckpt / "state.json").read_text())["step"] == 10
    assert load_result(out) == json.loads((out / "result.json").read_text())


def test_divergence_is_recorded(tmp_path, data):
    result = train(_cfg(tmp_path / "run", lr=1e30, warmup_frac=0.0, steps=20), data=data)
    assert result["status"] == "diverged" and result["loss"] is None
    assert result["diverged_at_step"] <= 3
    row = result_row(load_result(tmp_path / "run"))
    assert row["status"] == "diverged" and row["loss"] != row["loss"]  # NaN in the table


def test_existing_folder_needs_resume_and_finished_runs_return(tmp_path, data):
    cfg = _cfg(tmp_path / "run", steps=6)
    first = train(cfg, data=data)
    with pytest.raises(CapscaleError, match="--resume"):
        train(cfg, data=data)
    assert train(cfg, data=data, resume=True) == first
    # killed after its final checkpoint but before the result: resuming only validates
    (tmp_path / "run" / "result.json").unlink()
    again = train(cfg, data=data, resume=True)
    assert again["loss"] == first["loss"] and again["D"] == first["D"]
    with pytest.raises(CapscaleError, match="--out"):
        train(_cfg(steps=2), data=data, resume=True)


def test_resume_in_process_continues_exactly(tmp_path, data):
    kw = dict(steps=12, ckpt_every=4, eval_every=4, keep_checkpoints=3, w_format="sparse0.5+int4")
    full = train(_cfg(tmp_path / "full", **kw), data=data)
    # the same run, stopped after step 4: no result, the latest checkpoint is step 4
    again = _cfg(tmp_path / "again", **kw)
    train(again, data=data)
    run = tmp_path / "again"
    (run / "result.json").unlink()
    (run / "checkpoints" / "latest").write_text("step_0000004\n")
    resumed = train(again, data=data, resume=True)
    assert resumed["loss"] == full["loss"]
    assert [m["step"] for m in read_metrics(run) if m["kind"] == "val"] == [4, 8, 12]


def test_load_runs_table(tmp_path, data):
    for w in ("none", "int4"):
        train(_cfg(tmp_path / "runs" / w, steps=4, w_format=w), data=data)
    (tmp_path / "runs" / "pending").mkdir()
    (tmp_path / "runs" / "pending" / "config.json").write_text(
        json.dumps({"config": {"w_format": "int2", "a_format": "none", "seed": 0},
                    "plan": {"n_params": 5}}))
    df = load_runs(tmp_path / "runs")
    assert list(df.columns[: len(ROW_COLUMNS)]) == list(ROW_COLUMNS)
    assert sorted(df["w_format"]) == ["int4", "none"] and (df["status"] == "finished").all()
    assert df.set_index("w_format").loc["none", "gmse"] == 0.0
    assert len(load_runs(tmp_path / "runs", include_unfinished=True)) == 3


def test_amsgrad_option(data):
    r = train(_cfg(steps=3, optimizer="amsgrad"), data=data)
    assert r["status"] == "finished" and r["optimizer"] == "amsgrad"


@pytest.mark.slow
def test_compiled_run_matches_eager(data):
    """torch.compile (minutes on CPU) computes the same run as eager mode, to float tolerance."""
    kw = dict(steps=4, w_format="int4:had", a_format="int4:had")
    eager = train(_cfg(**kw), data=data)
    compiled = train(_cfg(compile=True, **kw), data=data)
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)


def test_optional_loggers(tmp_path, data):
    import importlib.util

    cfg = _cfg(tmp_path / "tb", steps=2, tensorboard=True)
    if importlib.util.find_spec("tensorboard") is None:
        with pytest.raises(CapscaleError, match="pip install tensorboard"):
            train(cfg, data=data)
        assert not (tmp_path / "tb").exists()  # refused before the run folder was written
    else:
        train(cfg, data=data)
        assert any((tmp_path / "tb" / "tensorboard").iterdir())
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(CapscaleError, match="pip install wandb"):
            train(_cfg(steps=2, wandb_project="capscale-test"), data=data)


def test_bf16_autocast_path(data):
    # the GPU code path (bf16 autocast around compressed layers), exercised on the CPU
    r = train(_cfg(steps=2, eval_every=2, batch_tokens=128, val_tokens=256, dtype="bf16",
                   w_format="int4:had", a_format="int4:had"), data=data)
    assert r["status"] == "finished" and r["dtype"] == "bf16" and 3.0 < r["loss"] < 5.0


def test_learned_scales_on_the_olmo2_block_train_and_resume_exactly(tmp_path, data):
    kw = dict(steps=8, ckpt_every=4, eval_every=4, keep_checkpoints=2, arch="olmo2",
              w_format="int3", a_format="int3", grad="lsq+")
    full = train(_cfg(tmp_path / "full", **kw), data=data)
    assert full["status"] == "finished" and full["arch"] == "olmo2" and full["grad_rule"] == "lsq+"
    assert full["w_rules"] == "int3:lsq+" and full["a_rules"] == "int3:lsq+(tensor)"
    again = _cfg(tmp_path / "again", **kw)
    train(again, data=data)
    run = tmp_path / "again"
    (run / "result.json").unlink()
    (run / "checkpoints" / "latest").write_text("step_0000004\n")
    # the learned scales and their initialised flags come back from the checkpoint
    assert train(again, data=data, resume=True)["loss"] == full["loss"]
