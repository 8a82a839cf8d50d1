"""Sweep specs: expansion, stable names, and the errors a user can cause."""

import re

import pytest

from capscale.errors import CapscaleError
from capscale.sweep import load_spec, run_name, spec_from_text
from capscale.sweep.worker import check_same_run
from capscale.train import TrainConfig

BASE = """
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
"""


def names(text: str) -> list[str]:
    return [r.name for r in spec_from_text(text).runs]


def test_grid_is_crossed_and_formats_are_paired():
    spec = spec_from_text("""
[grid]
size = ["30k", "100k"]
tokens_per_param = [5, 10]
formats = ["none", "int4", "int4/none", ["int8", "int4:had"]]
seed = [0, 1]
""" + BASE)
    assert len(spec.runs) == 2 * 2 * 4 * 2
    pairs = {(r.config.w_format, r.config.a_format) for r in spec.runs}
    assert pairs == {("none", "none"), ("int4", "int4"), ("int4", "none"), ("int8", "int4:had")}
    assert {r.config.seq_len for r in spec.runs} == {64}  # [train] reaches every run
    assert all(r.config.progress is False for r in spec.runs)
    r = spec.run("100k-tpp10-wint4-anone-s1")
    assert (r.n_params, r.tokens) == (106_816, round(10 * 106_816 / 1024) * 1024)
    assert r.steps == round(10 * 106_816 / 1024)


def test_operands_crossed_with_exclusions_and_extra_runs():
    spec = spec_from_text("""
[grid]
size = ["30k"]
w_format = ["none", "int4", "int8"]
a_format = ["none", "int8"]

[[exclude]]
w_format = "none"
a_format = "int8"

[[runs]]
size = "100k"
formats = "int4"
grad = "ste"
""" + BASE)
    got = {(r.config.size, r.config.w_format, r.config.a_format, r.config.grad) for r in spec.runs}
    assert got == {("30k", w, a, "trust") for w in ("none", "int4", "int8") for a in ("none", "int8")
                   if (w, a) != ("none", "int8")} | {("100k", "int4", "int4", "ste")}
    # a setting that differs from [train] shows in the name; the others do not
    assert "100k-tpp100-wint4-aint4-s0-grad_ste" in [r.name for r in spec.runs]


def test_names_are_stable_canonical_unique_and_filesystem_safe():
    a = names('[grid]\nformats = ["fp4", "2:4:pairs+int4:had/int4:had", "none"]\nsize = ["30k", "100k"]' + BASE)
    b = names('[grid]\nsize = ["100k", "30k"]\nformats = ["none", "e2m1", "2:4:pairs+int4:had/int4:had"]' + BASE)
    assert sorted(a) == sorted(b)  # order of keys and values does not matter; fp4 is e2m1
    assert "30k-tpp100-we2m1-ae2m1-s0" in a
    assert "30k-tpp100-w2_4_pairs+int4_had-aint4_had-s0" in a
    assert len(set(a)) == len(a)
    assert all(re.fullmatch(r"[A-Za-z0-9.+_-]+", n) for n in a)
    # the same config gives the same name whatever else the sweep holds
    cfg = TrainConfig(size="30k", w_format="int4", a_format="int4", tokens_per_param=20, seed=3)
    assert run_name(cfg) == "30k-tpp20-wint4-aint4-s3"
    long = TrainConfig(size="30k", data="/a/very/long/path/" + "x" * 200 + ".txt")
    assert len(run_name(long)) <= 120 and run_name(long) == run_name(long)


def test_custom_sizes_and_explicit_lengths():
    spec = spec_from_text("""
[sizes]
200k = {n_layer = 4, n_embd = 64, n_head = 2}
[grid]
size = ["200k", "30k"]
steps = [7]
""" + BASE)
    big = spec.runs[0]
    assert big.name == "L4d64h2-steps7-wnone-anone-s0"
    assert (big.config.n_layer, big.config.size, big.steps, big.n_params) == (4, None, 7, 213_568)
    assert spec.runs[1].name == "30k-steps7-wnone-anone-s0"


def test_repeated_run_is_kept_once():
    spec = spec_from_text('[grid]\nsize = ["30k"]\n[[runs]]\nsize = "30k"\n' + BASE)
    assert len(spec.runs) == 1


@pytest.mark.parametrize("text, words", [
    ('sizes = 3\n', ["sizes", "must be a table"]),
    ('[grdi]\nsize = ["30k"]\n', ["'grdi'", "did you mean 'grid'", "valid keys"]),
    ('[grid]\nsizes = ["30k"]\n', ["'sizes'", "did you mean 'size'", "tokens_per_param"]),
    ('[grid]\nsize = ["30k"]\n[train]\nseq_len = [64, 128]\n', ["seq_len", "put lists in [grid]"]),
    ('[grid]\nformats = ["int4"]\nw_format = ["int8"]\n', ["either formats", "not both"]),
    ('[grid]\nsize = []\n', ["size", "empty list"]),
    ('[grid]\nformats = ["int77"]\n', ["w_format", "int77"]),
    ('[grid]\nformats = [["int4"]]\n', ["formats", "[weights, activations] pair"]),
    ('[grid]\nseq_len = ["long"]\n', ["seq_len", "expected an int"]),
    ('[grid]\nsize = ["3T"]\n', ["3T", "unknown model size"]),
    ('[grid]\nsize = ["30k"]\nbatch_tokens = [1000]\n', ["batch_tokens=1000", "seq-len", "run (size=30k"]),
    ('[grid]\nsize = ["30k"]\n[launcher]\nkind = "k8s"\n', ["kind = 'k8s'", "local, torchrun, slurm"]),
    ('[grid]\nsize = ["30k"]\n[launcher]\njbos = 2\n', ["'jbos'", "jobs"]),
    ('[grid]\nsize = ["30k"]\n[slurm]\npartiton = "gpu"\n', ["'partiton'", "partition"]),
    ('[grid]\nsize = ["30k"]\n[slurm]\ntimeout_min = "1h"\n', ["timeout_min", "must be a int"]),
    ('[grid]\nsize = ["30k"]\n[cost]\nmfu = -1\n', ["mfu", "positive"]),
    ('[grid]\nsize = ["30k"]\n[[exclude]]\n', ["exclude", "empty"]),
    ('[sizes]\ntiny = {n_layer = 1}\n[grid]\nsize = ["tiny"]\n', ["tiny", "lacks n_embd, n_head"]),
    ('[train]\nseq_len = 64\n', ["no runs"]),
    ('[grid\nsize = 1', ["not valid TOML"]),
])
def test_bad_specs_name_the_key_and_what_is_valid(text, words):
    with pytest.raises(CapscaleError) as e:
        spec_from_text(text, source="bad.toml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_missing_file_and_cli_exit_code(tmp_path, capsys):
    from capscale.cli import main

    with pytest.raises(CapscaleError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nsize = ["30k"]\nformat = ["int4"]\n')
    assert main(["sweep", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'format'" in err and "Traceback" not in err


def test_dry_run_lists_runs_and_cost(tmp_path, capsys):
    from capscale.cli import main

    spec = tmp_path / "s.toml"
    spec.write_text('[grid]\nsize = ["30M", "200M"]\nformats = ["none", "int4"]\n'
                    '[train]\ntokenizer = "hf:meta-llama/Llama-2-7b-hf"\n')
    assert main(["sweep", str(spec), "-o", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "200M-tpp100-wint4-aint4-s0" in out and "4 pending" in out
    assert "V = 32,000" in out and "H100-hours at 30% MFU" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_cost_is_six_n_d_plus_head_and_attention():
    from capscale.sweep import estimate

    spec = spec_from_text('[grid]\nsize = ["30M"]\n[train]\ntokenizer = "train:spm:32000"\n')
    run = spec.runs[0]
    est = estimate(spec)
    n, d, v, width, layers = run.n_params, run.tokens, 32000, 640, 6
    assert est.total_flops == pytest.approx((6 * (n + v * width) + 6 * layers * 512 * width) * d)
    assert est.accelerator_hours == pytest.approx(est.total_flops / (0.3 * 989e12) / 3600)


def test_the_sweep_counts_flops_as_the_model_does():
    """One FLOP count: a planned run's FLOPs are the model's own per-token count times D."""
    from capscale.train import plan

    spec = spec_from_text('[grid]\nsize = ["30M", "50M"]\n[train]\ntokenizer = "train:spm:32000"\n'
                          'seq_len = 256\n')
    for run in spec.runs:
        model = plan(run.config, vocab_size=32000).model
        assert model.non_embedding_params == run.n_params
        assert run.flops(32000) == model.flops_per_token(256) * run.tokens


def test_a_folder_holding_another_run_is_refused(tmp_path):
    import json

    cfg = TrainConfig(size="30k", w_format="int4", out=str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"config": {**cfg.to_dict(), "lr": 0.5}}))
    with pytest.raises(CapscaleError, match="lr: folder 0.5, spec None"):
        check_same_run(cfg)
    (tmp_path / "config.json").write_text(json.dumps({"config": {**cfg.to_dict(), "device": "cuda"}}))
    check_same_run(cfg)  # runtime settings may differ


def test_architecture_and_learned_scale_rules_are_sweep_settings():
    spec = spec_from_text("""
[grid]
size = ["100k"]
arch = ["llama", "olmo2"]
grad = ["trust", "lsq", "pact"]
formats = ["int3"]
""" + BASE)
    assert len(spec.runs) == 6
    by_name = {r.name: r for r in spec.runs}
    olmo = [r for r in spec.runs if r.config.arch == "olmo2"]
    assert all("olmo2" in r.name for r in olmo) and len(set(by_name)) == 6
    # N follows the architecture: the ReLU² MLP has two matrices of 4d, SwiGLU three of 3d here
    assert {r.n_params for r in olmo} == {2 * (4 * 64 * 64 + 2 * 64 * 256 + 4 * 64) + 64}
    with pytest.raises(CapscaleError, match="dorefa"):
        spec_from_text('[grid]\nsize = ["30k"]\ngrad = ["dorefa"]\n' + BASE)


def test_a_run_whose_groups_do_not_divide_its_model_is_refused_when_planned():
    """Found running the groups study: groups of 32 over the CPU ladder's width of 40 passed
    the dry run (and its design check) and failed at each run's start. The spec names the run,
    the layer and what would divide it before anything is launched."""
    text = BASE + """
[grid]
size = ["cpu-w32", "cpu-w40"]
tokens = [262144]
w_format = ["int2:absmax:g32"]
"""
    with pytest.raises(CapscaleError) as e:
        spec_from_text(text)
    msg = str(e.value)
    assert "size=cpu-w40" in msg and "w_format=int2:absmax:g32" in msg
    assert "width 40" in msg and "multiple of 32" in msg
    fine = text.replace('"cpu-w40"', '"cpu-w24"').replace("g32", "g8")
    assert len(spec_from_text(fine).runs) == 2


def test_checking_formats_before_the_model_agrees_with_the_built_model():
    """check_formats (one small layer per reduction width) refuses exactly what the built
    model's check_shapes refuses, names the widths the model's linears really have, and leaves
    the random state that model initialisation will draw from untouched."""
    import torch

    from capscale.model import Llama
    from capscale.model.compressed_linear import (
        CompressedLinear,
        check_formats,
        check_shapes,
        compress_model,
    )
    from capscale.model.llama import LlamaConfig

    for arch, hidden in (("llama", 120), ("olmo2", 160)):
        shape = LlamaConfig(n_layer=1, n_embd=40, n_head=5, vocab_size=16, arch=arch)
        model = Llama(shape)
        compress_model(model, "int4", "int4")
        widths = {m.in_features for m in model.modules() if isinstance(m, CompressedLinear)}
        assert widths == set(shape.reduction_widths.values()) == {40, hidden}
    cfg = LlamaConfig(n_layer=1, n_embd=40, n_head=5, vocab_size=16)
    for w, a in [("int2:absmax:g8", "none"), ("int2:absmax:g32", "none"), ("none", "nvfp4"),
                 ("int4:had", "int4:had"), ("sparse0.5+int4", "none")]:
        built = Llama(cfg)
        compress_model(built, w, a)
        try:
            check_shapes(built)
            expected = None
        except CapscaleError as e:
            expected = str(e).split(": ", 1)[1]
        torch.manual_seed(7)
        before = torch.get_rng_state()
        try:
            check_formats(cfg, w, a)
            got = None
        except CapscaleError as e:
            got = str(e).split(": ", 1)[1]
        assert torch.equal(torch.get_rng_state(), before)
        assert got == expected, (w, a)
    assert any(isinstance(m, CompressedLinear) for m in built.modules())
