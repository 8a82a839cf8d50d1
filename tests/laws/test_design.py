"""The design simulator against an independent refit (scipy's least_squares with a Huber
loss, written here) and against its own asymptotic formula."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from capscale.errors import CapscaleError
from capscale.laws.design import expected_halfwidths, simulate_design

from .conftest import TRUE

EFF = {"none": 1.0, "int4": 0.7, "int2": 0.3}


def true_loss(runs: pd.DataFrame) -> pd.DataFrame:
    eff = runs["w_format"].map(EFF).to_numpy(float)
    N, D = runs["N"].to_numpy(float), runs["D"].to_numpy(float)
    loss = TRUE["A"] * (N * eff) ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"] + TRUE["E"]
    return pd.DataFrame({"loss": loss, "eff": eff})


def design(sizes=(3e7, 6e7, 1.2e8, 2.4e8), ratios=(20, 80), formats=("none", "int4", "int2")):
    return pd.DataFrame([{"N": n, "D": r * n, "w_format": f, "a_format": f, "seed": 0}
                         for n, r, f in itertools.product(sizes, ratios, formats)])


def oracle_fit(runs, y, delta=1e-3):
    """Huber fit on log loss with scipy's least_squares: (loss='huber', f_scale=delta) has the
    same minimiser as Σ huber_δ(log L̂ − log L)."""
    keys = ["int4", "int2"]
    onehot = np.stack([(runs["w_format"] == k).to_numpy(float) for k in keys], 1)
    lN, lD = np.log(runs["N"].to_numpy(float)), np.log(runs["D"].to_numpy(float))

    def resid(p):
        la, a, lb, b, le = p[:5]
        le_eff = onehot @ p[5:]
        with np.errstate(over="ignore"):
            pred = np.exp(la - a * (lN + le_eff)) + np.exp(lb - b * lD) + np.exp(le)
        return np.log(pred) - np.log(y)

    p0 = np.array([np.log(TRUE["A"]), TRUE["alpha"], np.log(TRUE["B"]), TRUE["beta"],
                   np.log(TRUE["E"]), np.log(0.7), np.log(0.3)])
    r = least_squares(resid, p0, loss="huber", f_scale=delta, x_scale="jac", xtol=1e-14,
                      ftol=1e-14, gtol=1e-14, max_nfev=20000)
    return np.exp(r.x[5:])


def test_simulation_matches_an_independent_refit():
    runs = design()
    n_sims, noise, seed = 24, 0.01, 3
    out = simulate_design(runs, true_loss, noise=noise, n_sims=n_sims, seed=seed)
    rng = np.random.default_rng(seed)
    loss = true_loss(runs)["loss"].to_numpy()
    Y = loss[None, :] + noise * rng.standard_normal((n_sims, len(runs)))
    rho = np.array([oracle_fit(runs, y) for y in Y])
    lo, med, hi = np.percentile(rho, [2.5, 50, 97.5], axis=0)
    got = out.set_index("w_format")
    for j, k in enumerate(["int4", "int2"]):
        assert got.loc[k, "rho_true"] == EFF[k]
        assert got.loc[k, "rho_median"] == pytest.approx(med[j], rel=2e-3)
        assert got.loc[k, "half_width"] == pytest.approx((hi[j] - lo[j]) / 2, rel=2e-2)
        assert bool(got.loc[k, "identified"])


def test_asymptotic_halfwidths_agree_with_simulation():
    runs = design()
    sim = simulate_design(runs, true_loss, noise=0.01, n_sims=400, seed=0)
    asym = expected_halfwidths(runs, true_loss, noise=0.01)
    for s, a in zip(sim["half_width"], asym["half_width"]):
        assert a == pytest.approx(s, rel=0.25)


def test_halfwidth_grows_with_noise_and_shrinks_with_replicas():
    runs = design()
    small = expected_halfwidths(runs, true_loss, noise=0.005)["half_width"].to_numpy()
    large = expected_halfwidths(runs, true_loss, noise=0.02)["half_width"].to_numpy()
    assert np.all(large > 2 * small)
    doubled = pd.concat([runs, runs.assign(seed=1)], ignore_index=True)
    two = expected_halfwidths(doubled, true_loss, noise=0.02)["half_width"].to_numpy()
    # a second seed of every run: √2 narrower in the limit (Huber weights do not change)
    np.testing.assert_allclose(two, large / np.sqrt(2), rtol=1e-6)


def test_unidentified_format_is_reported_as_such():
    # int2 at one model size only, and the dense runs at another: its multiplier is
    # confounded with nothing else here, but with noise this large its range is useless
    runs = design(ratios=(20,), formats=("none", "int4"))
    runs = pd.concat([runs, pd.DataFrame([{"N": 3e7, "D": 6e8, "w_format": "int2",
                                           "a_format": "int2", "seed": 0}])], ignore_index=True)
    out = simulate_design(runs, true_loss, noise=0.3, n_sims=50).set_index("w_format")
    assert not out.loc["int2", "identified"]
    assert np.isnan(out.loc["int2", "half_width"])


@pytest.mark.parametrize("kwargs, match", [
    ({"noise": 0.0}, "noise must be a positive"),
    ({"noise": 0.01, "n_sims": 5}, "n_sims"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(CapscaleError, match=match):
        simulate_design(design(), true_loss, **kwargs)


def test_design_without_compressed_runs_is_an_error():
    with pytest.raises(CapscaleError):
        simulate_design(design(formats=("none",)), true_loss, noise=0.01)
