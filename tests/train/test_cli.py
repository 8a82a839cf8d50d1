import argparse

import pytest

from capscale.cli import train as cli


def _parse(*argv):
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    return p.parse_args(list(argv))


def test_counts_accept_suffixes_and_scientific_notation():
    assert cli.count("3e9") == cli.count("3B") == 3_000_000_000
    assert cli.count("250M") == 250_000_000 and cli.count("40k") == 40_000
    assert cli.count("262144") == 262144
    for bad in ("abc", "0", "1.5", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            cli.count(bad)


def test_arguments_map_onto_the_config():
    args = _parse("--size", "30M", "--w", "int4:had", "--a", "int4:had", "--grad", "trust",
                  "--tokens-per-param", "100", "--data", "c4", "--sparse-grad", "b-rms")
    cfg = cli.config_from_args(args)
    assert (cfg.size, cfg.w_format, cfg.a_format, cfg.grad, cfg.data) == (
        "30M", "int4:had", "int4:had", "trust", "c4")
    assert cfg.sparse_grad == "b-rms" and cfg.tokens_per_param == 100
    assert cfg.out == "runs/30M-wint4_had-aint4_had-s0"
    custom = cli.config_from_args(_parse("--n-layer", "2", "--n-embd", "64", "--n-head", "2"))
    assert custom.size is None and custom.out.startswith("runs/L2d64h2")
    assert cli.config_from_args(_parse()).size == "30M"
    learned = cli.config_from_args(_parse("--size", "100k", "--grad", "lsq+", "--arch", "olmo2"))
    assert (learned.grad, learned.arch) == ("lsq+", "olmo2")
    assert learned.out == "runs/olmo2-100k-wnone-anone-s0"
    assert cli.to_argv(learned)[-4:] == ["--grad", "lsq+", "--out", learned.out]
    assert "--arch" in cli.to_argv(learned)
    for bad in (("--grad", "dorefa"), ("--arch", "gpt2")):
        with pytest.raises(SystemExit):
            _parse(*bad)


def test_capscale_train_end_to_end_on_the_embedded_corpus(tmp_path, monkeypatch, capsys):
    from capscale.cli import main
    from capscale.train import load_result

    monkeypatch.setenv("CAPSCALE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    argv = ["train", "--size", "30k", "--w", "int4:had", "--a", "int4:had", "--steps", "4",
            "--seq-len", "64", "--batch-tokens", "1024", "--val-tokens", "4096",
            "--data", "builtin:wiki", "--tokenizer", "train:spm:512", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    assert "finished: val loss" in capsys.readouterr().out
    r = load_result(out)
    assert r["vocab_size"] == 512 and r["w_format"] == "int4:had" and r["D"] == 4096
    assert r["data"] == "builtin:wiki" and r["tokenizer"] == "train:spm:512"
    assert main(argv) == 2  # the folder holds a run: without --resume it is a user error
    assert "--resume" in capsys.readouterr().err
    assert main([*argv, "--resume"]) == 0  # finished: prints the existing result


def test_to_argv_round_trips_a_config():
    from capscale.train import TrainConfig

    cfg = TrainConfig(size="1M", w_format="sparse0.5+int4:had", a_format="int8", grad="ste",
                      sparse_grad="a-b-rms", sparse_area=0.3, tokens=3_000_000, lr=2e-3,
                      optimizer="amsgrad", beta2=0.99, compile=True, progress=False,
                      seed=4, out="runs/x", val_fraction=0.1, trust_radius=0.25)
    assert cli.config_from_args(_parse(*cli.to_argv(cfg))) == cfg
    custom = TrainConfig(size=None, n_layer=3, n_embd=64, n_head=2, out="runs/y")
    assert cli.config_from_args(_parse(*cli.to_argv(custom))) == custom
