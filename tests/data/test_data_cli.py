"""`capscale data prepare` and `capscale data fetch`, through the command's own parser."""

from __future__ import annotations

import argparse

import pytest

from capscale.cli import data as cli
from capscale.errors import CapscaleError


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="capscale data")
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(argv))


def test_prepare_then_cached(jsonl_corpus, cache, capsys):
    argv = ["prepare", "--data", str(jsonl_corpus), "--tokenizer", "train:spm:512",
            "--cache-dir", str(cache), "--quiet", "--val-tokens", "3000"]
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "vocab 512, uint16" in out and "built in" in out and "tokens/s" in out
    assert run(argv) == 0
    assert "; cached" in capsys.readouterr().out


def test_user_errors_are_capscale_errors(tmp_path, cache):
    with pytest.raises(CapscaleError, match="no such file"):
        run(["prepare", "--data", str(tmp_path / "none.txt"), "--cache-dir", str(cache)])
    with pytest.raises(CapscaleError, match="max_tokens"):
        run(["prepare", "--data", "c4", "--tokenizer", "hf:gpt2", "--cache-dir", str(cache)])
    with pytest.raises(SystemExit):
        run(["fetch", "tinystories"])
