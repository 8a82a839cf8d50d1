import pytest

from capscale.errors import CapscaleError
from capscale.train.config import TrainConfig, plan


def test_paper_setup_plan():
    # QuEST 30M run: 3e9 tokens at 262,144 tokens per step = 11,444 steps of 512 x 512
    cfg = TrainConfig(size="30M", tokens=3_000_000_000)
    p = plan(cfg, vocab_size=50304, world_size=8, device_type="cuda")
    assert p.steps == 11444 and p.n_params == 30_482_560
    assert p.batch_size == 512 and p.micro_batch == 64 and p.accum_steps == 1
    assert p.lr == 1.2e-3
    assert p.tokens == 11444 * 262144


def test_tokens_per_param_and_accumulation():
    cfg = TrainConfig(size="100k", seq_len=128, batch_tokens=128 * 32, tokens_per_param=20)
    p = plan(cfg, vocab_size=4096, world_size=2, device_type="cpu")
    assert p.steps == round(20 * p.n_params / (128 * 32))
    assert p.micro_batch * p.accum_steps * 2 == 32
    assert p.micro_batch * 128 <= 8192


def test_custom_shape_takes_the_nearest_rungs_lr():
    cfg = TrainConfig(size=None, n_layer=6, n_embd=640, n_head=5, steps=10)
    assert plan(cfg, 100).lr == 1.2e-3
    cfg = TrainConfig(size="30M", n_layer=8, steps=10)  # a preset with one dimension changed
    p = plan(cfg, 100)
    assert p.model.n_layer == 8 and p.model.n_embd == 640


@pytest.mark.parametrize("bad", [
    {"batch_tokens": 1000, "seq_len": 512}, {"micro_batch": 3, "batch_tokens": 512 * 8},
    {"size": "7M"}, {"size": None}, {"optimizer": "sgd"}, {"lr": -1.0}, {"steps": 0},
    {"w_format": "int9"}, {"a_format": "sparse2"}, {"sparse_grad": "magic"}, {"sparse_p": 0.9},
])
def test_config_errors(bad):
    with pytest.raises(CapscaleError):
        plan(TrainConfig(**bad), 100)


def test_config_round_trip():
    cfg = TrainConfig(size="1M", w_format="int4:had", steps=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(CapscaleError, match="unknown training settings"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": "red"})


def test_a_rule_that_does_not_fit_the_format_fails_before_any_data_is_read():
    for kw, words in ((dict(w_format="mxfp4", grad="lsq"), "scalar grid"),
                      (dict(a_format="2:4", sparse_grad="b-rms"), "N:M")):
        with pytest.raises(CapscaleError, match=words):
            TrainConfig(size="30k", **kw).validate()
    TrainConfig(size="30k", w_format="sparse0.5+int4", grad="pact").validate()
