"""The refits that start near a known optimum find what a search from every start finds."""

from __future__ import annotations

import numpy as np
import pytest

from capscale.laws import load_builtin
from capscale.laws.fit import FitSettings, continue_near, fit_once, heldout_error
from capscale.laws.forms import make_law
from capscale.laws.table import size_groups


@pytest.mark.parametrize("table, law", [("chinchilla", "chinchilla"), ("frantar-t5", "sparsity")])
def test_heldout_fit_from_the_whole_fits_end_points_is_the_searched_one(table, law):
    """Chinchilla leaves out 1 of 240 runs, Frantar's T5 table 12 of 48."""
    df = load_builtin(table)
    settings = FitSettings()
    whole = make_law(law, df)
    ms, _ = fit_once(whole, df, settings)
    groups = size_groups(df["N"].to_numpy())
    rest = df[groups != groups.max()].reset_index(drop=True)
    rest_law = make_law(law, rest)
    searched, _ = fit_once(rest_law, rest, settings)
    near = continue_near(rest_law, rest, settings, whole, ms.finalists)
    assert near.value <= searched.value * (1 + 1e-9)
    np.testing.assert_allclose(rest_law.to_natural(near.theta),
                               rest_law.to_natural(searched.theta), rtol=1e-4)
    a = heldout_error(df, law, settings)
    b = heldout_error(df, law, settings, near=(whole, ms.finalists))
    assert b["n_runs"] == a["n_runs"]
    for key in ("rmse_loss", "rmse_log_loss", "mean_error", "max_abs_error"):
        assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_heldout_fit_searches_every_start_where_the_laws_differ():
    """Parameters that the whole table's law has and the rest's lacks (or the other way
    round) cannot be carried over: no shortcut then."""
    df = load_builtin("chinchilla")
    whole = make_law("chinchilla", df)
    other = make_law("sparsity", load_builtin("frantar-t5"))
    x = whole.start_grid()[:3]
    assert continue_near(other, load_builtin("frantar-t5"), FitSettings(), whole, x) is None
