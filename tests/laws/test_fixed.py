"""Fixing law parameters (fit_law(fix=...), capscale fit --fix) against an independent
Huber fit written here, and the published curve transferred to dense runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from capscale.errors import CapscaleError
from capscale.laws import FitResult, fit_law
from capscale.laws.fixed import parse_fix

from .conftest import TRUE, chinchilla_loss, grid, noisy


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(3)
    df = pd.DataFrame([{"N": n, "D": d} for n, d in grid()])
    df["loss"] = noisy(chinchilla_loss(df["N"], df["D"]), 0.003, rng)
    return df


def oracle(df, E, delta=1e-3):
    """Huber fit on log loss with E held, by scipy's least_squares (loss='huber')."""
    lN, lD, y = np.log(df["N"].to_numpy()), np.log(df["D"].to_numpy()), df["loss"].to_numpy()

    def r(p):
        la, a, lb, b = p
        return np.log(np.exp(la - a * lN) + np.exp(lb - b * lD) + E) - np.log(y)

    p0 = [np.log(TRUE["A"]), TRUE["alpha"], np.log(TRUE["B"]), TRUE["beta"]]
    res = least_squares(r, p0, loss="huber", f_scale=delta, x_scale="jac", xtol=1e-15,
                        ftol=1e-15, gtol=1e-15, max_nfev=20000)
    la, a, lb, b = res.x
    return {"A": np.exp(la), "alpha": a, "B": np.exp(lb), "beta": b}


def test_fixed_e_matches_an_independent_fit(table, tmp_path):
    fit = fit_law(table, "chinchilla", fix={"E": 2.0}, n_bootstrap=50, heldout=False, n_jobs=1)
    want = oracle(table, 2.0)
    for k, v in want.items():
        assert fit.param(k) == pytest.approx(v, rel=1e-4)
    assert fit.param("E") == 2.0
    assert fit.interval("E") == (2.0, 2.0)
    assert fit.law.n_params == 4
    fit.to_json(tmp_path / "f.json")
    again = FitResult.load(tmp_path / "f.json")
    np.testing.assert_allclose(again.predict(table)["loss"], fit.predict(table)["loss"], rtol=1e-12)


def test_fixing_a_centred_coefficient(table):
    # A is fitted centred (log A − α·c_N); fixing A at its true value recovers α and the rest
    fit = fit_law(table, "chinchilla", fix="A=400", n_bootstrap=0, heldout=False)
    assert fit.param("A") == 400.0
    assert fit.param("alpha") == pytest.approx(TRUE["alpha"], abs=0.01)
    assert fit.param("E") == pytest.approx(TRUE["E"], abs=0.05)


def unified_table(levels=("int4",)):
    rng = np.random.default_rng(5)
    rows = [{"N": n, "D": d, "w_format": f, "a_format": f}
            for n, d in grid() for f in ("none",) + tuple(levels)]
    df = pd.DataFrame(rows)
    from capscale.laws.representation import spec_gmse

    def rho(f):
        if f == "none":
            return 1.0
        g = spec_gmse(f)
        return (np.tanh(0.41 * np.log(g) / np.log(0.25)) ** 1.39) ** 2

    e = df["w_format"].map(rho).to_numpy()
    df["loss"] = noisy(chinchilla_loss(df["N"], df["D"], e), 0.002, rng)
    return df


def test_unified_with_the_curve_fixed_needs_one_gmse_level():
    df = unified_table()
    with pytest.raises(CapscaleError, match="GMSE"):
        fit_law(df, "unified", n_bootstrap=0, heldout=False)
    fit = fit_law(df, "unified", fix="F=0.41,C=1.39,L=1", n_bootstrap=0, heldout=False)
    assert fit.param("F") == 0.41 and fit.param("C") == 1.39
    assert fit.param("alpha") == pytest.approx(TRUE["alpha"], abs=0.02)


def test_fix_l_alias_and_fix_agree():
    df = unified_table(("int2", "int3", "int4"))
    a = fit_law(df, "unified", fix_L=1.0, n_bootstrap=0, heldout=False)
    b = fit_law(df, "unified", fix={"L": 1.0}, n_bootstrap=0, heldout=False)
    assert a.natural == pytest.approx(b.natural, rel=1e-9)


@pytest.mark.parametrize("text, match", [("E", "NAME=VALUE"), ("E=abc", "NAME=VALUE"),
                                         ("Q=1", "no parameter"), ("E=-1", "positive"),
                                         ("E=1.7±0.1", "exactly")])
def test_bad_fix(table, text, match):
    with pytest.raises(CapscaleError, match=match):
        fit_law(table, "chinchilla", fix=text, n_bootstrap=0, heldout=False)


def test_parse_fix():
    assert parse_fix("F=0.41±0.02, C=1.39+-0.08,L=1") == {"F": (0.41, 0.02), "C": (1.39, 0.08),
                                                          "L": (1.0, 0.0)}


def test_cli_fix(only_laws_cli, table, tmp_path, capsys):
    table.to_csv(tmp_path / "runs.csv", index=False)
    assert only_laws_cli(["fit", str(tmp_path / "runs.csv"), "--fix", "E=1.8,alpha=0.34",
                          "--bootstrap", "0", "--no-heldout"]) == 0
    out = capsys.readouterr().out
    assert "E = 1.8" in out or "1.8" in out
    assert only_laws_cli(["fit", str(tmp_path / "runs.csv"), "--fix", "nope=1"]) == 2


def test_transfer_carries_the_curve_uncertainty(table, only_laws_cli, tmp_path, capsys):
    from capscale.laws import predict
    from capscale.laws.representation import spec_gmse
    from capscale.laws.transfer import transfer_fit

    fit = transfer_fit(table, {"F": (0.41, 0.02), "C": (1.39, 0.08)}, n_bootstrap=400,
                       heldout=False, n_jobs=1)
    p = predict(fit, 1e9, 2e10, format="int4").iloc[0]
    lg = np.log(spec_gmse("int4")) / np.log(0.25)
    assert p["eff"] == pytest.approx((np.tanh(0.41 * lg) ** 1.39) ** 2, rel=1e-9)
    # an independent Monte Carlo of the same curve uncertainty
    rng = np.random.default_rng(11)
    F, C = rng.normal(0.41, 0.02, 200000), rng.normal(1.39, 0.08, 200000)
    lo, hi = np.percentile((np.tanh(F * lg) ** C) ** 2, [2.5, 97.5])
    assert p["eff_lo"] == pytest.approx(lo, rel=0.03)
    assert p["eff_hi"] == pytest.approx(hi, rel=0.03)
    dense = predict(fit, 1e9 * p["eff"], 2e10, format="none").iloc[0]
    assert p["loss"] == pytest.approx(dense["loss"], rel=1e-9)  # loss of N·ρ dense parameters
    # the same through the CLI: fit on dense runs with the curve, then predict
    table.to_csv(tmp_path / "dense.csv", index=False)
    assert only_laws_cli(["fit", str(tmp_path / "dense.csv"), "--law", "unified", "--fix",
                          "F=0.41±0.02,C=1.39±0.08,L=1", "--bootstrap", "100", "--no-heldout",
                          "-o", str(tmp_path / "t.json")]) == 0
    assert only_laws_cli(["predict", str(tmp_path / "t.json"), "--n", "1e9", "--d", "2e10",
                          "--format", "nvfp4"]) == 0
    assert "nvfp4" in capsys.readouterr().out


def test_compute_optimal_of_a_fit_with_fixed_parameters(table):
    from capscale.laws import compute_optimal

    fit = fit_law(table, "chinchilla", fix={"E": 1.8}, n_bootstrap=20, heldout=False, n_jobs=1)
    res = compute_optimal(fit, [1e21]).iloc[0]
    A, a, B, b = (fit.param(k) for k in ("A", "alpha", "B", "beta"))
    G = (a * A / (b * B)) ** (1 / (a + b))  # Hoffmann et al. closed form
    assert res["N_opt"] == pytest.approx(G * (1e21 / 6) ** (b / (a + b)), rel=1e-9)
