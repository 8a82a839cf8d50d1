"""Training that says what it did: a token budget too small for a run is an error naming the
minimum, the record and the log name the gradient rule each operand really trained with, and
the epochs over the training split are counted."""

import pytest
from synthetic import synthetic_data

from capscale.errors import CapscaleError
from capscale.train import TrainConfig, train
from capscale.train.config import MIN_STEPS, check_budget, plan


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


def test_a_budget_below_the_minimum_steps_is_an_error():
    cfg = TrainConfig(size="30k", tokens=200_000)
    with pytest.raises(CapscaleError, match=r"0\.763 optimizer step.*at least 10 steps.*2,621,440"):
        check_budget(cfg, plan(cfg, 512))
    with pytest.raises(CapscaleError, match="at least 10 steps"):
        train(cfg)  # before any data is read
    ok_cfg = TrainConfig(size="30k", tokens=MIN_STEPS * 262_144)
    ok = plan(ok_cfg, 512)
    check_budget(ok_cfg, ok)
    assert ok.steps == MIN_STEPS and ok.tokens == MIN_STEPS * 262_144  # D recorded = D trained
    explicit = TrainConfig(size="30k", steps=2)  # steps asked for explicitly
    check_budget(explicit, plan(explicit, 512))


@pytest.mark.parametrize("fmt, real", [("mxfp4", "ste"), ("nvfp4", "ste"), ("int4", "trust")])
def test_the_record_names_the_rule_each_operand_trained_with(tmp_path, data, capsys, fmt, real):
    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=2, lr=1e-2, progress=False,
                      val_tokens=512, log_every=1, w_format=fmt, a_format="none", grad="trust",
                      out=str(tmp_path / "run"))
    result = train(cfg, data=data)
    assert result["grad_rule"] == real and result["grad_rule_w"] == real
    assert result["grad_rule_requested"] == "trust" and result["grad_rule_a"] is None
    err = capsys.readouterr().err
    if real != "trust":
        assert f"weights {fmt} train with ste, not trust" in err
    else:
        assert "gradient rule:" not in err


def test_epochs_are_counted_in_the_log_and_the_record(tmp_path, data, capsys):
    from capscale.train.data import RunData

    train_tokens = 2_000  # a small training split, as the data layer reports it
    data = RunData(data.vocab_size, data.train_batches, data.val_batches,
                   {**data.info, "train_tokens": train_tokens})
    steps = 10  # 5,120 tokens: 2.56 epochs
    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=steps, lr=1e-2,
                      progress=False, val_tokens=512, log_every=1000, eval_every=10**6,
                      out=str(tmp_path / "run"))
    result = train(cfg, data=data)
    assert result["epochs"] == pytest.approx(steps * 512 / train_tokens)
    assert result["epochs"] > 2
    assert f"is {result['epochs']:.2f} epochs of the training split" in capsys.readouterr().err


def test_train_prints_an_estimate_before_the_first_step_and_an_eta(tmp_path, data, capsys):
    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=4, lr=1e-2, progress=False,
                      val_tokens=512, log_every=1, eval_every=2, out=str(tmp_path / "run"))
    train(cfg, data=data)
    err = capsys.readouterr().err.splitlines()
    first_step = next(i for i, ln in enumerate(err) if ln.startswith("step "))
    estimate = [i for i, ln in enumerate(err) if ln.startswith("estimate: about ")]
    assert estimate and estimate[0] < first_step, err
    assert "for 4 step(s)" in err[estimate[0]] and "3 validation(s)" in err[estimate[0]]
    val_lines = [ln for ln in err if ln.startswith("step ") and "val loss" in ln]
    assert val_lines and all(", ETA " in ln and "elapsed" in ln for ln in val_lines)
    assert val_lines[-1].endswith("ETA 0.0s")


def test_the_measurement_leaves_the_run_unchanged(tmp_path, data, monkeypatch):
    """The estimate runs a copy of the model under its own random streams: a run with a
    learned scale (initialised from the first tensor it sees) is bit-identical without it."""
    from capscale.train import loop

    def run(name):
        cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=3, lr=1e-2,
                          progress=False, val_tokens=512, w_format="int4", a_format="int4",
                          grad="lsq", out=str(tmp_path / name))
        return train(cfg, data=data)

    measured = run("measured")
    monkeypatch.setattr(loop, "estimate_wall_time",
                        lambda *a, **k: {"total_s": 0.0, "step_s": 0.0, "micro_s": 0.0, "evals": 1})
    plain = run("plain")
    assert measured["loss"] == plain["loss"]
    assert measured["final_train_loss"] == plain["final_train_loss"]


def test_a_kill_between_the_final_checkpoint_and_the_record_keeps_the_train_loss(tmp_path, data):
    """Found by the sweep fault-injection test: resumed from its final checkpoint, a run
    recorded final_train_loss None. The checkpoint carries it."""
    from pathlib import Path

    cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=3, lr=1e-2, progress=False,
                      val_tokens=512, ckpt_every=1, out=str(tmp_path / "run"))
    whole = train(cfg, data=data)
    (Path(cfg.out) / "result.json").unlink()  # as if killed before the record was written
    resumed = train(cfg, data=data, resume=True)
    assert resumed["final_train_loss"] == whole["final_train_loss"] is not None
    assert resumed["loss"] == whole["loss"]
