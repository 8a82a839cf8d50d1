"""The expression language of --where / --derive: evaluated by capscale, never by Python."""

import numpy as np
import pandas as pd
import pytest

from capscale.errors import CapscaleError
from capscale.laws.expr import compute, parse, select
from capscale.laws.table import load_runs


@pytest.fixture
def df():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame({
        "N": rng.choice([1e6, 3e6, 1e7, 3e7], n), "D": rng.uniform(1e8, 1e10, n),
        "loss": rng.uniform(2.5, 4.0, n), "seed": rng.integers(0, 3, n),
        "format": rng.choice(["int4:had", "int8", "none"], n),
        "Model Size": rng.uniform(1, 10, n),
    })


@pytest.mark.parametrize("where, pandas_query", [
    ("N > 2e6", "N > 2e6"),
    ("N >= 3e6 and loss < 3.2", "N >= 3e6 and loss < 3.2"),
    ("not (seed == 0) or format == 'int8'", "not (seed == 0) or format == 'int8'"),
    ("1e6 < N <= 1e7", "1e6 < N <= 1e7"),
    ("format in ['int4:had', 'none']", "format in ['int4:had', 'none']"),
    ("format not in ['int4:had']", "format not in ['int4:had']"),
    ("D / N > 1000 & seed != 2", "(D / N > 1000) & (seed != 2)"),
    ("-loss ** 2 < -9", "-loss ** 2 < -9"),
    ("`Model Size` * 2 - 3 >= 5 | ~(seed == 1)", "(`Model Size` * 2 - 3 >= 5) | ~(seed == 1)"),
    ("log10(N) + sqrt(D) / 1e5 > 6.5", lambda d: np.log10(d.N) + np.sqrt(d.D) / 1e5 > 6.5),
])
def test_select_agrees_with_pandas(df, where, pandas_query):
    # the oracle: pandas' own evaluator on trusted test text, or numpy
    expected = (df[pandas_query(df)] if callable(pandas_query)
                else df.query(pandas_query, engine="python"))
    got = select(df, where)
    assert got["D"].tolist() == expected["D"].tolist()


def test_compute_agrees_with_numpy(df):
    got = compute(df, "6 * N * D / 2 ** 3 - exp(-loss) + abs(-seed) + (1 - 2) * 3")
    want = 6 * df.N * df.D / 8 - np.exp(-df.loss) + df.seed - 3
    np.testing.assert_allclose(got, want, rtol=1e-15)
    assert compute(df, "2 ** 3 ** 2")[0] == 512.0  # right-associative, as in Python
    assert compute(df, "-2 ** 2")[0] == -4.0


@pytest.mark.parametrize("text", [
    "@pd.io.common.os.system('touch X') == 0",
    "__import__('os').system('touch X')",
    "N.__class__",
    "(lambda: 1)()",
    "N[0]",
    "open('X', 'w')",
    "N; import os",
    "getattr(N, 'x')",
    "'a' 'b'",
    "((((" * 30 + "N" + "))))" * 30,
    "-" * 100 + "N",
    "+".join(["N"] * 400),
    "",
])
def test_anything_else_is_refused(df, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CapscaleError):
        select(df, text)
    with pytest.raises(CapscaleError):
        compute(df, text)
    assert not (tmp_path / "X").exists()


def test_where_never_runs_python(tmp_path, monkeypatch):
    """Finding: `--where "@pd.io.common.os.system('touch X') == 0"` created X (pandas' python
    engine evaluated the call)."""
    from capscale.cli import main

    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"N": [1e6, 2e6], "D": [1e9, 2e9], "loss": [3.0, 2.9]}).to_csv("r.csv", index=False)
    for where in ("@pd.io.common.os.system('touch X') == 0",
                  "N.__class__.__init__.__globals__ == 0",
                  "`N`.__class__ == 0"):
        assert main(["fit", "r.csv", "--where", where, "--bootstrap", "0", "--no-heldout"]) == 2
        assert not (tmp_path / "X").exists()
    assert load_runs("r.csv", where="N > 1.5e6")["N"].tolist() == [2e6]


def test_messages_name_the_input(df):
    with pytest.raises(CapscaleError, match="no column 'Q'.*columns are"):
        select(df, "Q > 1")
    with pytest.raises(CapscaleError, match="unknown function 'eval'"):
        compute(df, "eval(N)")
    with pytest.raises(CapscaleError, match="position 2"):
        parse("N @ 3", "--where")
    with pytest.raises(CapscaleError, match="not a condition"):
        select(df, "'text'")


def test_a_fit_json_reads_its_runs_again_through_the_evaluator(tmp_path, monkeypatch):
    """A fit JSON records how its table was selected; a report reads it back with the same
    evaluator, so an expression planted in the file is refused, not run."""
    import json

    from capscale.laws import FitResult, fit_law
    from capscale.report.build import _runs_of_fit

    monkeypatch.chdir(tmp_path)
    rows = [{"N": n, "D": 20 * n * k, "loss": 1.7 + 400 * n ** -0.34 + 410 * (20 * n * k) ** -0.28,
             "seed": 0} for n in (1e6, 3e6, 1e7, 3e7) for k in (1, 2, 4)]
    pd.DataFrame(rows).to_csv("r.csv", index=False)
    df = load_runs("r.csv", where="N > 2e6", derive="tpp=D/N")
    result = fit_law(df, law="chinchilla", n_bootstrap=0, heldout=False)
    result.to_json("fit.json")
    again = _runs_of_fit(FitResult.load("fit.json"), None)
    assert again is not None and len(again) == 9
    d = json.loads((tmp_path / "fit.json").read_text())
    d["data"]["selection"]["where"] = "@pd.io.common.os.system('touch X') == 0"
    (tmp_path / "fit.json").write_text(json.dumps(d))
    assert _runs_of_fit(FitResult.load("fit.json"), None) is None
    assert not (tmp_path / "X").exists()


@pytest.mark.parametrize("content", ["[]", '{"schema": 1}', "{", ""])
def test_malformed_fit_json_is_one_message(tmp_path, content):
    from capscale.laws import FitResult

    (tmp_path / "f.json").write_text(content)
    with pytest.raises(CapscaleError, match="f.json"):
        FitResult.load(tmp_path / "f.json")


def test_fit_json_with_bad_theta_is_one_message(tmp_path):
    import json

    from capscale.laws import FitResult, fit_law

    df = load_runs("builtin:chinchilla")
    fit_law(df, law="chinchilla", n_bootstrap=0, heldout=False).to_json(tmp_path / "f.json")
    d = json.loads((tmp_path / "f.json").read_text())
    for theta in ("abc", {"values": "abc"}, {"values": [1.0]}, None):
        d["theta"] = theta
        (tmp_path / "g.json").write_text(json.dumps(d))
        with pytest.raises(CapscaleError, match="g.json"):
            FitResult.load(tmp_path / "g.json")
    del d["theta"]
    (tmp_path / "g.json").write_text(json.dumps(d))
    with pytest.raises(CapscaleError, match="theta"):
        FitResult.load(tmp_path / "g.json")
