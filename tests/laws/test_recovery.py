"""Recovery: runs drawn from known parameters plus noise give those parameters back within
their bootstrap intervals, for every law."""

import itertools

import numpy as np
import pandas as pd
import pytest

from capscale.laws import fit_law

from .conftest import TRUE, chinchilla_loss, grid, noisy

SIGMA = 0.003  # 0.3% multiplicative noise on the loss, typical of seed-to-seed variation
LEVEL = 0.99


def check_recovered(fit, truth: dict):
    for name, value in truth.items():
        lo, hi = fit.interval(name)
        assert lo <= value <= hi, f"{name}: true {value} outside [{lo:.5g}, {hi:.5g}] (fit {fit.param(name):.5g})"


def test_chinchilla_recovery(chinchilla_table):
    fit = fit_law(chinchilla_table, "chinchilla", n_bootstrap=200, level=LEVEL, heldout=False)
    check_recovered(fit, TRUE)


def test_decoupled_recovery(rng):
    eff = {"f1": 0.3, "f2": 0.6, "f3": 0.85}
    rows = []
    for (n, d), fmt in itertools.product(grid(ratios=(20, 50, 100)), ["none", *eff]):
        rows.append({"N": n, "D": d, "format": fmt,
                     "loss": chinchilla_loss(n, d, eff.get(fmt, 1.0))})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], SIGMA, rng)
    fit = fit_law(df, "decoupled", n_bootstrap=200, level=LEVEL, heldout=False)
    check_recovered(fit, {**TRUE, **{f"eff[{k}]": v for k, v in eff.items()}})


def unified_table(rng, L=0.95, F=0.45, C=1.3):
    gmse = {"q1": 0.3634, "q2": 0.1175, "q3": 0.0374, "q4": 0.0115, "q6": 7.3e-4}

    def rho(g):
        return L * np.tanh(F * np.log(g) / np.log(0.25)) ** C

    rows = []
    pairs = [("none", "none")] + [(q, q) for q in gmse] + [(q, "none") for q in ("q1", "q2", "q4")]
    for (n, d), (w, a) in itertools.product(grid(ratios=(25, 100)), pairs):
        e = (1.0 if w == "none" else rho(gmse[w])) * (1.0 if a == "none" else rho(gmse[a]))
        rows.append({"N": n, "D": d, "w_format": w, "a_format": a,
                     "w_gmse": gmse.get(w, np.nan), "a_gmse": gmse.get(a, np.nan),
                     "w_kind": "scalar" if w != "none" else "dense",
                     "a_kind": "scalar" if a != "none" else "dense",
                     "loss": chinchilla_loss(n, d, e)})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], SIGMA, rng)
    return df


def test_unified_recovery(rng):
    df = unified_table(rng)
    fit = fit_law(df, "unified", n_bootstrap=200, level=LEVEL, heldout=False)
    assert fit.law.groups == ["scalar"]
    check_recovered(fit, {**TRUE, "L": 0.95, "F": 0.45, "C": 1.3})


def test_precision_recovery(rng):
    gw, ga = 1.5, 2.2
    rows = []
    for (n, d), (bw, ba) in itertools.product(grid(ratios=(25, 100)),
                                              [(16, 16), (8, 8), (4, 4), (3, 3), (2, 2), (4, 16), (2, 16)]):
        neff = (1 - np.exp(-bw / gw)) * (1 - np.exp(-ba / ga))
        rows.append({"N": n, "D": d, "w_format": f"b{bw}", "a_format": f"b{ba}",
                     "w_bits": bw, "a_bits": ba, "loss": chinchilla_loss(n, d, neff)})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], SIGMA, rng)
    fit = fit_law(df, "precision", n_bootstrap=200, level=LEVEL, heldout=False)
    check_recovered(fit, {**TRUE, "gamma[w]": gw, "gamma[a]": ga})


def test_sparsity_recovery(rng):
    p = {"a": 30.0, "b": 0.8, "c": 60.0, "d": 0.3, "e": 400.0, "f": 0.3, "g": 1.6}
    rows = []
    for n, S, r in itertools.product(np.geomspace(1e7, 1e9, 6), (0.0, 0.5, 0.75, 0.875), (20, 80)):
        N = n * (1 - S)
        D = r * n
        loss = (p["a"] * (1 - S) ** p["b"] + p["c"]) * N ** -p["d"] + p["e"] * D ** -p["f"] + p["g"]
        rows.append({"N": N, "D": D, "sparsity": S, "loss": loss})
    df = pd.DataFrame(rows)
    df["loss"] = noisy(df["loss"], SIGMA, rng)
    fit = fit_law(df, "sparsity", n_bootstrap=200, level=LEVEL, heldout=False)
    check_recovered(fit, p)


@pytest.mark.parametrize("law", ["chinchilla", "decoupled"])
def test_noise_free_data_are_fitted_exactly(law):
    formats = ["none", "h"] if law == "decoupled" else ["none"]
    rows = [{"N": n, "D": d, "format": f, "loss": chinchilla_loss(n, d, {"none": 1, "h": 0.5}[f])}
            for (n, d), f in itertools.product(grid(), formats)]
    fit = fit_law(pd.DataFrame(rows), law, n_bootstrap=0, heldout=False)
    assert fit.info["rmse_log_loss"] < 1e-7
    if law == "decoupled":
        assert fit.param("eff[h]") == pytest.approx(0.5, rel=1e-5)
        assert fit.param("alpha") == pytest.approx(TRUE["alpha"], rel=1e-5)


def test_bootstrap_does_not_depend_on_the_number_of_processes(chinchilla_table):
    one = fit_law(chinchilla_table, "chinchilla", n_bootstrap=60, n_jobs=1, heldout=False)
    two = fit_law(chinchilla_table, "chinchilla", n_bootstrap=60, n_jobs=2, heldout=False)
    # the same resamples and starts; only BLAS block sizes differ (summation order, ~1e-10)
    np.testing.assert_allclose(one.samples, two.samples, rtol=1e-7, atol=1e-9)
