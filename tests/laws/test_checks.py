import itertools

import numpy as np
import pandas as pd
import pytest

from capscale.errors import CapscaleError
from capscale.laws import composability, data_independence, fit_law, load_builtin

from .conftest import chinchilla_loss, noisy


def test_data_independence_tells_constant_from_drifting_multipliers(rng):
    def eff(fmt, ratio):
        return {"steady": 0.5, "drifts": 0.25 if ratio < 40 else 0.7}.get(fmt, 1.0)

    rows = []
    for n, ratio, fmt in itertools.product(np.geomspace(2e7, 1e9, 6), (25, 50, 100),
                                           ("none", "steady", "drifts")):
        rows.append({"N": n, "D": ratio * n * (1 + 0.01 * np.sin(n)), "format": fmt,
                     "loss": chinchilla_loss(n, ratio * n, eff(fmt, ratio))})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], 0.002, rng)
    table = data_independence(df, n_bootstrap=100)
    assert sorted(set(table["tokens_per_param"])) == [25, 50, 100]
    agree = table.groupby("format")["agree"].first()
    assert bool(agree["steady"]) is True
    assert bool(agree["drifts"]) is False
    steady = table[table["format"] == "steady"]
    assert np.allclose(steady["eff"], 0.5, atol=0.03)


def test_data_independence_on_quest():
    table = data_independence(load_builtin("quest"), n_bootstrap=60)
    multi = table[table["n_ratios"] > 1]
    # the Hadamard W2A2, W3A3 and W4A4 runs exist at about 25, 50 and 100 tokens per parameter
    assert set(multi["format"]) == {"int2:had/int2:had", "int3:had/int3:had", "int4:had/int4:had"}
    ratios = sorted(set(multi["tokens_per_param"]))
    assert ratios == pytest.approx([25, 50, 100], rel=0.05)
    assert multi["agree"].notna().all()


def grid_table(rng, break_cell=False):
    mw = {"none": 1.0, "w4": 0.85, "w2": 0.45}
    ma = {"none": 1.0, "a4": 0.8, "a2": 0.4}
    rows = []
    for n, ratio, w, a in itertools.product(np.geomspace(2e7, 1e9, 5), (30, 100), mw, ma):
        e = mw[w] * ma[a] * (0.5 if break_cell and (w, a) == ("w2", "a2") else 1.0)
        rows.append({"N": n, "D": ratio * n, "w_format": w, "a_format": a,
                     "loss": chinchilla_loss(n, ratio * n, e)})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], 0.001, rng)
    return df


def test_composability_of_a_product_grid(rng):
    table = composability(grid_table(rng))
    assert len(table) == 4  # w4/w2 x a4/a2
    assert table["abs_error"].max() < 0.02
    assert table.attrs["axes"] == ("weights", "activations")


def test_composability_finds_the_broken_cell(rng):
    fit = fit_law(grid_table(rng, break_cell=True), "decoupled", n_bootstrap=0, heldout=False)
    table = composability(fit).set_index("format")
    assert table.loc["w2/a2", "abs_error"] > 0.08
    assert table.drop("w2/a2")["abs_error"].max() < 0.02


def test_composability_symmetric_assumption_on_quest():
    fit = fit_law(load_builtin("quest"), "decoupled", n_bootstrap=0, heldout=False)
    plain = composability(fit)
    assert plain["product"].isna().all()  # QuEST has no activation-only runs
    sym = composability(fit, assume_symmetric=True).set_index("format")
    cell = sym.loc["int4:had/int4:had"]
    assert cell["assumed_symmetric"] == "y"
    # W4A4 against (W4-only)^2: the unified paper's multiplicative picture
    assert cell["abs_error"] < 0.05


def test_composability_needs_multipliers(chinchilla_table):
    fit = fit_law(chinchilla_table, "chinchilla", n_bootstrap=0, heldout=False)
    with pytest.raises(CapscaleError, match="multiplier per format"):
        composability(fit)
