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
