"""The refits that start near a known optimum find what a search from every start finds."""

from __future__ import annotations

import numpy as np
import pytest

from capscale.laws import load_builtin
from capscale.laws.fit import FitSettings, _bootstrap_chunk, continue_near, fit_once, heldout_error
from capscale.laws.forms import make_law
from capscale.laws.optim import HuberObjective, Rescaled, curvature_scale
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


def test_curvature_scale_inverts_a_quadratics_hessian():
    rng = np.random.default_rng(0)
    Q = rng.standard_normal((4, 4))
    H = Q @ Q.T + 0.1 * np.eye(4)

    def fun(x, rows=None):
        return 0.5 * np.einsum("sp,pq,sq->s", x, H, x), x @ H

    C = curvature_scale(fun, np.ones(4))
    np.testing.assert_allclose(C @ C.T, np.linalg.inv(H), rtol=1e-6)
    r = Rescaled(fun, np.ones(4), C)
    z = rng.standard_normal((3, 4))
    np.testing.assert_allclose(r.to_z(r.to_theta(z)), z, atol=1e-12)
    _, gz = r(z)
    np.testing.assert_allclose(gz, fun(r.to_theta(z))[1] @ C)


def test_bootstrap_refits_in_scaled_coordinates_reach_the_unscaled_optima():
    df = load_builtin("chinchilla")
    law = make_law("chinchilla", df)
    ms, obj = fit_once(law, df, FitSettings())
    loss = df["loss"].to_numpy()
    rng = np.random.default_rng(5)
    w = np.zeros((60, len(df)))
    for i in range(len(w)):
        np.add.at(w[i], rng.integers(0, len(df), len(df)), 1.0)
    starts = ms.theta[None, :]
    plain = _bootstrap_chunk(law, obj.X, loss, w, starts, 1e-3, "log")
    scaled = _bootstrap_chunk(law, obj.X, loss, w, starts, 1e-3, "log",
                              (ms.theta, curvature_scale(obj, ms.theta)))
    weighted = HuberObjective(law, obj.X, loss, weights=w)
    f_plain = weighted(plain, np.arange(len(w)))[0]
    f_scaled = weighted(scaled, np.arange(len(w)))[0]
    assert np.all(f_scaled <= f_plain * (1 + 1e-8))
    np.testing.assert_allclose(law.to_natural(scaled), law.to_natural(plain), rtol=1e-3)
