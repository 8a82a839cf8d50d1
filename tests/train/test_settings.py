"""One source for the training settings: the CLI's flags, its help, the config's checks and
the sweep specs' keys all come from the Settings on TrainConfig's fields."""

from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest

from capscale.cli import main
from capscale.cli import train as cli
from capscale.errors import CapscaleError
from capscale.sweep import spec_from_text
from capscale.train.config import GROUPS, TrainConfig, settings


def _parser():
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p


def test_every_field_is_a_documented_flag_in_its_group():
    p = _parser()
    dests = {a.dest: a for a in p._actions}
    for name, s in settings().items():
        assert s.group in GROUPS and s.doc, name
        action = dests[name]
        assert action.help.startswith(s.doc)
        assert action.option_strings == [s.flag or "--" + name.replace("_", "-")]
        assert tuple(action.choices or ()) == s.choices
    help_text = p.format_help()
    for title in GROUPS.values():
        assert title in help_text
    # flags beside the settings: how to run, not what to run
    assert set(dests) - set(settings()) == {"help", "resume", "json"}


def test_flags_not_given_leave_the_config_defaults():
    assert cli.config_from_args(_parser().parse_args([])) == TrainConfig(out="runs/30M-wnone-anone-s0")
    partial = cli.config_from_args(_parser().parse_args(["--n-layer", "2"]))
    assert partial.size == "30M" and partial.out.startswith("runs/L2d")  # not the 30M run's folder


@pytest.mark.parametrize("name, bad, good", [
    ("beta1", 1.0, 0.999), ("eps", 0.0, 1e-12), ("weight_decay", -0.1, 0.0),
    ("sparse_p", 0.5, 0.3), ("lr", 0.0, 1e-3), ("grad_clip", -1.0, 0.5),
    ("warmup_frac", 1.0, 0.0), ("final_lr_frac", 1.5, 1.0), ("tokens", 10**16, 10**6),
    ("seq_len", 0, 1), ("tokens_per_param", math.inf, 20.0), ("val_fraction", 0.0, 0.2),
])
def test_each_range_refuses_the_value_outside_and_takes_the_one_inside(name, bad, good):
    with pytest.raises(CapscaleError, match=name.replace("_", "-") + ".*must be"):
        TrainConfig(size="30k", **{name: bad}).validate()
    TrainConfig(size="30k", **{name: good}).validate()


@pytest.mark.parametrize("name, bad, message", [
    ("seq_len", "512", "a whole number"), ("seq_len", 64.5, "a whole number"),
    ("compile", "yes", "true or false"), ("lr", float("nan"), "a finite number"),
    ("optimizer", "sgd", "use one of adamw, amsgrad"), ("grad", "dorefa", "use one of ste, trust"),
])
def test_wrong_kinds_and_choices_are_refused_by_name(name, bad, message):
    with pytest.raises(CapscaleError, match=message):
        TrainConfig(size="30k", **{name: bad}).validate()


def test_a_sweep_spec_is_checked_against_the_same_settings(tmp_path, capsys):
    base = '[train]\ntokenizer = "train:spm:512"\nseq_len = 64\nbatch_tokens = 1024\n'
    with pytest.raises(CapscaleError, match="warmup 'sine': use one of cos, linear"):
        spec_from_text('[grid]\nsize = ["30k"]\nwarmup = ["sine"]\n' + base, source="s.toml")
    with pytest.raises(CapscaleError, match="beta2=1.5: must be in \\[0, 1\\)"):
        spec_from_text('[grid]\nsize = ["30k"]\nbeta2 = [1.5]\n' + base, source="s.toml")
    spec = spec_from_text('[grid]\nsize = ["30k"]\nbatch_tokens = ["2Ki"]\n' + base, source="s.toml")
    assert spec.runs[0].config.batch_tokens == 2048  # counts in the number grammar
    path = tmp_path / "s.toml"
    path.write_text('[grid]\nsize = ["30k"]\nwarmup = ["sine"]\n' + base)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert "use one of cos, linear" in capsys.readouterr().err


def test_every_field_has_exactly_one_setting():
    assert [f.name for f in fields(TrainConfig)] == list(settings())


@pytest.mark.parametrize("name", ["grad_clip", "optimizer", "dtype", "warmup", "tokens_per_param",
                                  "log_every", "clip_scale", "sparse_p"])
def test_none_is_refused_where_the_setting_is_not_optional(name):
    with pytest.raises(CapscaleError, match=name.replace("_", "-") + "=None: must be"):
        TrainConfig(size="30k", **{name: None}).validate()
    TrainConfig(size=None, n_layer=2, n_embd=64, n_head=2, lr=None, steps=None).validate()


def test_library_values_of_the_right_kind_are_taken():
    import pathlib

    import numpy as np

    TrainConfig(size="30k", out=pathlib.Path("runs/x"), seq_len=np.int64(64),
                batch_tokens=np.int64(1024), lr=np.float64(1e-3), seed=np.int32(3)).validate()


def test_an_integer_too_large_for_a_float_is_out_of_range_not_a_crash(capsys):
    huge = 10 ** 400
    with pytest.raises(CapscaleError, match="tokens=1000.*at most 1e\\+15"):
        TrainConfig(size="30k", tokens=huge).validate()
    assert main(["train", "--size", "30k", "--tokens", str(huge), "--out", "x"]) == 2
    assert "at most 1e+15" in capsys.readouterr().err


def test_the_default_folder_is_named_after_the_checks():
    with pytest.raises(CapscaleError, match="n-layer=0: must be >= 1"):
        cli.config_from_args(_parser().parse_args(["--n-layer", "0", "--n-embd", "64",
                                                   "--n-head", "2"]))


def test_a_spec_given_as_a_dict_may_leave_the_size_to_an_explicit_shape():
    from capscale.sweep.spec import spec_from_dict

    spec = spec_from_dict({"grid": {"size": [None], "n_layer": [2], "n_embd": [64],
                                    "n_head": [2]},
                           "train": {"tokenizer": "train:spm:512", "seq_len": 64,
                                     "batch_tokens": 1024, "tokens": 20480}}, source="d")
    assert spec.runs[0].config.size is None and spec.runs[0].name.startswith("L2d64h2")
