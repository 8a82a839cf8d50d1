"""Learned quantizer scales at a rate of their own (``scale_lr``): Adam moves every parameter
by about its learning rate per step, so a scale far smaller than the model's rate needs its
own. Checked against Adam's first step, which moves each parameter by exactly its rate."""

import glob

import pytest
import torch
from safetensors.torch import load_file
from synthetic import synthetic_data
from torch import nn

from capscale.errors import CapscaleError
from capscale.model.compressed_linear import compress_model
from capscale.train import TrainConfig, train
from capscale.train.optim import LR_RATIO, build_optimizer, group_lr, parameter_groups
from capscale.train.records import identity


def _lsq_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32, bias=False)).double()  # float64: exact steps
    compress_model(model, "int4", "int4", "lsq", exclude=None)
    model.double()(torch.randn(8, 64, dtype=torch.float64))  # the scales initialise on the first tensors they see
    return model, model[0]


def test_scale_lr_needs_a_rule_that_learns_a_scale():
    with pytest.raises(CapscaleError, match=r"scale-lr=0.0001 .*--grad trust.*lsq, lsq\+, pact"):
        TrainConfig(size="30k", w_format="int4", scale_lr=1e-4).validate()
    TrainConfig(size="30k", w_format="int4", grad="lsq", scale_lr=1e-4).validate()
    with pytest.raises(CapscaleError, match="scale-lr"):
        TrainConfig(size="30k", grad="lsq", scale_lr=0.0).validate()
    # nothing quantized, nothing learned: the rate would only rename a dense run
    with pytest.raises(CapscaleError, match=r"--w none --a none have no grid"):
        TrainConfig(size="30k", grad="lsq", scale_lr=1e-4).validate()
    with pytest.raises(CapscaleError, match="no grid"):
        TrainConfig(size="30k", w_format="sparse0.5", grad="lsq", scale_lr=1e-4).validate()
    TrainConfig(size="30k", a_format="int4", grad="pact", scale_lr=1e-4).validate()


def test_learned_scales_form_a_group_only_when_given_a_rate():
    model, layer = _lsq_layer()
    assert len(parameter_groups(model, 0.1)) == 2  # as before: the same optimizer state
    decay, rest, scales = parameter_groups(model, 0.1, 0.01)
    scale_params = {id(layer.w_scale.step), id(layer.a_scale.step)}
    assert {id(p) for p in scales["params"]} == scale_params
    assert not scale_params & {id(p) for p in decay["params"] + rest["params"]}
    assert scales["weight_decay"] == 0.0 and scales[LR_RATIO] == 0.01
    assert group_lr(scales, 4e-3) == pytest.approx(4e-5) and group_lr(decay, 4e-3) == 4e-3


def test_adams_first_step_moves_each_scale_by_its_own_rate():
    model, layer = _lsq_layer()
    cfg = TrainConfig(size="30k", grad="lsq", scale_lr=3e-5, weight_decay=0.0, eps=1e-30)
    opt = build_optimizer(model, cfg, lr=2e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(8, 64, dtype=torch.float64)).pow(2).sum().backward()
    for g in opt.param_groups:
        g["lr"] = group_lr(g, 2e-3)
    opt.step()
    for n, p in model.named_parameters():
        moved = (p.detach() - before[n]).abs()
        rate = 3e-5 if "scale" in n else 2e-3
        has_grad = p.grad != 0
        torch.testing.assert_close(moved[has_grad], torch.full_like(moved[has_grad], rate),
                                   rtol=1e-9, atol=0)


def test_a_run_trains_its_scales_at_scale_lr_and_records_it(tmp_path):
    data = synthetic_data()

    def run(name, scale_lr):
        cfg = TrainConfig(size="30k", seq_len=32, batch_tokens=512, steps=4, lr=1e-2,
                          progress=False, val_tokens=512, w_format="int4", a_format="int4",
                          grad="lsq", scale_lr=scale_lr, out=str(tmp_path / name))
        result = train(cfg, data=data)
        final = sorted(glob.glob(str(tmp_path / name / "checkpoints" / "step_*")))[-1]
        weights = load_file(f"{final}/model.safetensors")
        return result, {k: v for k, v in weights.items() if k.endswith("scale.step")}

    slow, slow_scales = run("slow", 1e-12)
    slower, slower_scales = run("slower", 2e-12)
    _, model_rate_scales = run("model-rate", None)
    assert slow["scale_lr"] == 1e-12
    assert slow_scales.keys() == model_rate_scales.keys() and slow_scales
    # at 1e-12 a scale stays where it started: twice the rate moves it by nothing measurable
    for k in slow_scales:
        torch.testing.assert_close(slow_scales[k], slower_scales[k], rtol=0, atol=1e-9)
    assert max((slow_scales[k] - model_rate_scales[k]).abs().max().item()
               for k in slow_scales) > 1e-4


def test_a_record_written_before_a_setting_existed_still_matches_its_run():
    cfg = TrainConfig(size="30k", w_format="int4").to_dict()
    old = {k: v for k, v in cfg.items() if k != "scale_lr"}
    assert identity(old) == identity(cfg)
    assert identity({**old, "scale_lr": 1e-4}) != identity(cfg)


def test_a_run_with_scale_lr_resumed_mid_way_is_bit_identical(tmp_path):
    """The optimizer's third group and its rate share come back from the checkpoint."""
    import shutil
    from pathlib import Path

    data = synthetic_data()
    cfg = dict(size="30k", seq_len=32, batch_tokens=512, steps=4, lr=1e-2, progress=False,
               val_tokens=512, w_format="int4", a_format="int4", grad="lsq", scale_lr=1e-4,
               ckpt_every=2, keep_checkpoints=2)
    whole = train(TrainConfig(**cfg, out=str(tmp_path / "whole")), data=data)
    cut = Path(tmp_path / "cut")
    shutil.copytree(tmp_path / "whole", cut)
    (cut / "result.json").unlink()
    shutil.rmtree(cut / "checkpoints" / "step_0000004")
    (cut / "checkpoints" / "latest").write_text("step_0000002\n")
    resumed = train(TrainConfig(**cfg, out=str(cut)), data=data, resume=True)
    assert resumed["loss"] == whole["loss"]
    assert resumed["final_train_loss"] == whole["final_train_loss"]
