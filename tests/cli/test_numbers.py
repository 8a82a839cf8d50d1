"""One number grammar on every numeric flag and in sweep specs: decimal k/M/B/G/T,
binary Ki/Mi/Gi/Ti, plain integers and floats; NaN, inf, negatives and garbage refused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from capscale.cli import main
from capscale.numbers import NumberError, binary_alternative, parse_number

# The references: SI prefixes (10^3n) and the IEC binary prefixes (2^10n), written out.
SI = {"k": 1000, "K": 1000, "M": 1_000_000, "B": 1_000_000_000, "G": 1_000_000_000,
      "T": 1_000_000_000_000}
IEC = {"Ki": 1024, "Mi": 1_048_576, "Gi": 1_073_741_824, "Ti": 1_099_511_627_776}


@pytest.mark.parametrize("suffix", sorted({**SI, **IEC}))
def test_suffixes_are_si_decimal_and_iec_binary(suffix):
    mult = {**SI, **IEC}[suffix]
    assert parse_number(f"3{suffix}") == 3 * mult
    assert parse_number(f"1.5{suffix}") == 1.5 * mult
    assert parse_number(f"2{suffix.lower()}") == 2 * mult  # letters are case-insensitive


@pytest.mark.parametrize("text", ["3000000000", "3e9", "3E9", "3.0e9", "3B", "3G", "3_000_000_000",
                                  " 3b ", "0.003T", "+3e9"])
def test_plain_and_scientific_spellings_agree(text):
    assert parse_number(text, integer=True) == 3_000_000_000
    assert parse_number(text) == float(text.replace("B", "e9").replace("b", "e9").replace(
        "G", "e9").replace("T", "e12")) if text.strip()[-1].isalpha() else float(text)


@pytest.mark.parametrize("text,why", [
    ("nan", "not finite"), ("inf", "not finite"), ("-inf", "not finite"), ("1e400", "not finite"),
    ("-1", "out of range"), ("0", "out of range"), ("abc", "is not a number"),
    ("3X", "is not a number"), ("k", "is not a number"), ("1..2", "is not a number"),
    ("", "is not a number"), ("1__0", "is not a number"), ("3kk", "is not a number"),
])
def test_garbage_is_refused_naming_the_input(text, why):
    with pytest.raises(NumberError, match=why) as e:
        parse_number(text, name="--n", lo=0, lo_open=True)
    assert f"--n {text!r}" in str(e.value)


def test_integer_counts_refuse_fractions():
    assert parse_number("1.5k", integer=True) == 1500
    with pytest.raises(NumberError, match="whole number"):
        parse_number("1.5", integer=True)


def test_binary_twin_of_a_decimal_count():
    assert binary_alternative(8000, 128) == "8Ki (8192)"
    assert binary_alternative(256_000, 512) == "256Ki (262144)"
    assert binary_alternative(1_000_000, 512) == "1Mi (1048576)"
    assert binary_alternative(8001, 128) is None


def _cli(*argv):
    done = subprocess.run([sys.executable, "-m", "capscale", *argv], capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_predict_takes_the_same_numbers_as_train(capsys):
    assert main(["predict", "builtin:quest-unified", "--n", "1B", "--d", "20B", "--format",
                 "int4", "--json"]) == 0
    suffixed = capsys.readouterr().out
    assert main(["predict", "builtin:quest-unified", "--n", "1e9", "--d", "2e10", "--format",
                 "int4", "--json"]) == 0
    assert capsys.readouterr().out == suffixed


def test_compare_takes_suffixed_sizes(capsys):
    assert main(["compare", "builtin:quest-unified", "int4", "int8", "--n", "100M", "--d",
                 "2B", "--json"]) == 0
    assert '"N": 100000000' in capsys.readouterr().out.replace(".0", "")


@pytest.mark.parametrize("argv,flag", [
    (["predict", "builtin:quest-unified", "--n", "nan", "--d", "1e9"], "--n"),
    (["predict", "builtin:quest-unified", "--n", "-1B", "--d", "1e9"], "--n"),
    (["compare", "builtin:quest-unified", "int4", "int8", "--n", "1x", "--d", "1e9"], "--n"),
    (["train", "--tokens", "3.5"], "--tokens"),
    (["train", "--batch-tokens", "8 K i"], "--batch-tokens"),
    (["gmse", "int4", "--shape", "4Kix-1"], "--shape"),
    (["compare", "builtin:quest-unified", "int4", "int8", "--n", "1e8", "--d", "1e9",
      "--memory", "-4GB"], "--memory"),
])
def test_bad_numbers_exit_2_without_a_traceback(argv, flag):
    rc, out, err = _cli(*argv)
    assert rc == 2, (out, err)
    assert "Traceback" not in err and flag in err


def test_batch_tokens_8k_is_decimal_and_the_error_suggests_8Ki(tmp_path):
    run = tmp_path / "run"
    rc, out, err = _cli("train", "--size", "30k", "--seq-len", "128", "--batch-tokens", "8k",
                        "--out", str(run))
    assert rc == 2 and "Traceback" not in err
    assert "batch-tokens=8,000 is not a multiple of seq-len=128" in err
    assert "8Ki (8192)" in err
    assert not run.exists()  # nothing written


def test_train_flags_parse_the_grammar():
    import argparse

    from capscale.cli import train as cli

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    args = p.parse_args(["--batch-tokens", "8Ki", "--tokens", "3B", "--val-tokens", "1Mi",
                         "--seq-len", "128", "--eval-every", "1k"])
    cfg = cli.config_from_args(args)
    assert (cfg.batch_tokens, cfg.tokens, cfg.val_tokens, cfg.eval_every) == (
        8192, 3_000_000_000, 1_048_576, 1000)
    cfg.validate()


def test_help_states_the_grammar():
    rc, out, _ = _cli("train", "--help")
    text = " ".join(out.split())
    assert rc == 0 and "1k = 1000" in text and "1Ki = 1024" in text


def test_sweep_specs_take_the_same_numbers():
    from capscale.errors import CapscaleError
    from capscale.sweep import spec_from_text

    base = '[train]\ntokenizer = "train:spm:512"\nseq_len = 64\n'
    plain = spec_from_text('[grid]\nsize = ["30k"]\ntokens = [2048000]\n' + base
                           + "batch_tokens = 8192\n")
    suffixed = spec_from_text('[grid]\nsize = ["30k"]\ntokens = ["2.048M"]\n' + base
                              + 'batch_tokens = "8Ki"\n')
    assert [r.name for r in plain.runs] == [r.name for r in suffixed.runs]
    assert [r.config.to_dict() for r in plain.runs] == [r.config.to_dict() for r in suffixed.runs]
    with pytest.raises(CapscaleError, match="tokens"):
        spec_from_text('[grid]\nsize = ["30k"]\ntokens = ["lots"]\n' + base)
    with pytest.raises(CapscaleError, match="8Ki"):
        spec_from_text('[grid]\nsize = ["30k"]\ntokens = ["2M"]\n[train]\nseq_len = 128\n'
                       'batch_tokens = "8k"\n')
