"""The fit a sweep suggests is one its runs can support: `--dry-run` checks it before a step
is trained and says what is missing. The reference is the fit itself: `fit_law` on the
planned grid with synthetic losses succeeds exactly when the advice says it will."""

from __future__ import annotations

import numpy as np
import pytest

from capscale.cli import main
from capscale.errors import CapscaleError
from capscale.laws import fit_law
from capscale.sweep import spec_from_text
from capscale.sweep.advice import fit_advice, planned_table

TRAIN = """
[train]
tokenizer = "train:spm:512"
seq_len = 64
batch_tokens = 1024
"""
SPECS = {
    "no dense runs": ('size = ["30k", "100k", "350k"]\ntokens_per_param = [10, 20]\n'
                      'formats = ["int4", "int2"]\n', "dense runs"),
    "one size": ('size = ["100k"]\ntokens_per_param = [10, 20, 40]\n'
                 'formats = ["none", "int4", "int2"]\n', "two or more model sizes"),
    "enough": ('size = ["30k", "100k", "350k"]\ntokens_per_param = [10, 20]\n'
               'formats = ["none", "int4"]\n', None),
    "dense only": ('size = ["30k", "100k", "350k"]\ntokens_per_param = [10, 20]\n'
                   'formats = ["none"]\n', None),
}


def _spec(name):
    return spec_from_text("[grid]\n" + SPECS[name][0] + TRAIN, source=f"{name}.toml")


def _synthetic_fit_works(spec, law) -> bool:
    df = planned_table(spec.runs)
    eff = {"none": 1.0, "int4": 0.7, "int2": 0.3}
    e = df["w_format"].map(eff).to_numpy()
    rng = np.random.default_rng(0)
    df["loss"] = (400 * (df["N"] * e) ** -0.34 + 2000 * df["D"] ** -0.36 + 1.8) * np.exp(
        0.002 * rng.standard_normal(len(df)))
    try:
        fit_law(df, law, n_bootstrap=0, heldout=False, n_jobs=1, max_starts=8)
    except CapscaleError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SPECS))
def test_advice_matches_what_the_fit_can_do(name):
    spec = _spec(name)
    advice = fit_advice(spec)
    missing = SPECS[name][1]
    assert advice.ok == (missing is None), advice.problem
    if missing:
        assert missing in advice.problem
    assert _synthetic_fit_works(spec, advice.law) == advice.ok
    if name == "dense only":
        assert advice.law == "chinchilla"
    elif name == "enough":
        assert advice.law == "decoupled"


def test_dry_run_says_what_is_missing_and_suggests_no_failing_fit(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text("[grid]\n" + SPECS["no dense runs"][0] + TRAIN)
    assert main(["sweep", str(path), "--dry-run", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "cannot identify" in out and "add dense runs" in out
    assert "--law decoupled`" not in out
    path.write_text("[grid]\n" + SPECS["enough"][0] + TRAIN)
    assert main(["sweep", str(path), "--dry-run", "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"support `capscale fit {tmp_path / 'out' / 'runs.csv'} --law decoupled`" in out


def test_runs_that_differ_only_in_their_gradient_rule_are_two_representations():
    """The LSQ study's shape: one format trained with trust estimation and with LSQ. The
    planned table keeps the rule, so the advice does not call the LSQ runs duplicates."""
    spec = spec_from_text(
        "[grid]\n" + SPECS["enough"][0]
        + '[[runs]]\nsize = "100k"\ntokens_per_param = 10\nformats = "int4"\ngrad = "lsq"\n'
        + TRAIN, source="lsq.toml")
    df = planned_table(spec.runs)
    assert set(df["grad"]) == {"trust", "lsq"}
    advice = fit_advice(spec)
    assert advice.ok, advice.problem
