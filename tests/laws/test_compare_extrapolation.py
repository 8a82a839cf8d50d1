"""`compare` says when N, D or a format's GMSE lie outside the fitted runs, in the words and
with the check of `predict` (one source), in its tables, its warnings and on the CLI."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest

from capscale.cli import main
from capscale.laws import compare_formats, fit_law, predict
from capscale.laws.paired import paired_compare

EFF = {"none": 1.0, "int2": 0.3, "int4": 0.7}
SIZES, RATIOS = (2e7, 5e7, 1e8, 2e8), (20, 80)


def _table(wa: bool) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for n, r, f in itertools.product(SIZES, RATIOS, EFF):
        row = {"N": n, "D": r * n}
        row.update({"w_format": f, "a_format": f} if wa else {"format": f})
        rows.append(row)
    df = pd.DataFrame(rows)
    e = (df["w_format"] if wa else df["format"]).map(EFF).to_numpy()
    loss = 400 * (df["N"] * e) ** -0.34 + 2000 * df["D"] ** -0.36 + 1.8
    df["loss"] = loss * np.exp(0.003 * rng.standard_normal(len(df)))
    return df


@pytest.fixture(scope="module", params=[True, False], ids=["w/a columns", "format column"])
def fit(request):
    return fit_law(_table(request.param), "decoupled", n_bootstrap=60, heldout=False, n_jobs=1)


def test_inside_the_fitted_range_nothing_is_said(fit):
    res = paired_compare(fit, ["int4", "int2"], N=1e8, D=4e9)
    assert res["formats"].attrs["warnings"] == []
    assert (res["formats"]["extrapolation"] == "").all()


def test_beyond_the_fitted_n_and_d_compare_warns_as_predict_does(fit):
    N, D = 7e9, 1e12  # the runs reach N = 2e8 and D = 1.6e10
    res = paired_compare(fit, ["int4", "int2"], N=N, D=D)
    warnings = res["formats"].attrs["warnings"]
    # the range quoted is the runs table's own, computed here
    n_lo, n_hi = min(SIZES), max(SIZES)
    assert any(w.startswith(f"N {N:.3g} lies outside") and f"({n_lo:.3g} to {n_hi:.3g})" in w
               for w in warnings), warnings
    d_lo, d_hi = min(SIZES) * min(RATIOS), max(SIZES) * max(RATIOS)
    assert any(w.startswith(f"D {D:.3g} lies outside") and f"({d_lo:.3g} to {d_hi:.3g})" in w
               for w in warnings), warnings
    assert res["formats"]["extrapolation"].str.contains("N 7e\\+09 outside").all()
    # the same sentences as `predict` gives for the same query
    assert predict(fit, [N], [D], format="int4").attrs["warnings"] == warnings


def test_equal_memory_sizes_outside_the_range_are_named_with_their_scenario(fit):
    # 1 GB of weights holds 2e9 INT4 parameters: far beyond the fitted 2e8
    res = paired_compare(fit, ["int4", "int2"], N=1e8, D=4e9, memory="1GB")
    warnings = res["formats"].attrs["warnings"]
    assert warnings and all(w.startswith("equal memory") for w in warnings), warnings


def test_unified_gmse_outside_the_fitted_range_is_an_extrapolation():
    from capscale.laws.builtin_fits import load_fit

    fit = load_fit("builtin:quest-unified")  # runs from INT8 (GMSE 8.8e-5) to INT1 (0.36)
    table = compare_formats(fit, ["int4", "noise0.5"])
    row = table.set_index("format")
    assert row.loc["int4", "extrapolation"] == ""
    assert "GMSE 0.5 outside" in row.loc["noise0.5", "extrapolation"]
    assert any(w.startswith("GMSE 0.5 lies outside") for w in table.attrs["warnings"])


def test_cli_compare_prints_the_extrapolation_warnings(capsys):
    assert main(["compare", "builtin:quest-decoupled", "int4", "int8", "--n", "7B", "--d",
                 "100B"]) == 0
    out = capsys.readouterr().out
    assert "warning: N 7e+09 lies outside the fitted runs' range" in out
    assert main(["predict", "builtin:quest-decoupled", "--format", "int4", "--n", "7B", "--d",
                 "100B"]) == 0
    predicted = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("warning")]
    assert predicted and all(w in out for w in predicted)
    assert main(["compare", "builtin:quest-decoupled", "int4", "int8", "--n", "7B", "--d",
                 "100B", "--json"]) == 0
    assert any("N 7e+09" in w for w in json.loads(capsys.readouterr().out)["warnings"])
