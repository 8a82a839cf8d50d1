import itertools

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from capscale.errors import CapscaleError
from capscale.laws import (
    FitResult,
    compare_formats,
    compute_optimal,
    fit_law,
    pareto_front,
    predict,
)
from capscale.laws import representation as rep

from .conftest import TRUE, chinchilla_loss, grid
from .test_recovery import unified_table


@pytest.fixture(scope="module")
def decoupled_fit():
    rows = [{"N": n, "D": d, "format": f, "loss": chinchilla_loss(n, d, {"none": 1, "h": 0.5}[f])
             * (1 + 0.002 * np.sin(i))}
            for i, ((n, d), f) in enumerate(itertools.product(grid(), ["none", "h"]))]
    return fit_law(pd.DataFrame(rows), "decoupled", n_bootstrap=100, heldout=False)


def test_predict_matches_the_formula_and_gives_dense_equivalent(decoupled_fit):
    fit = decoupled_fit
    out = predict(fit, [1e9, 1e10], [2e10], format="h")
    p = {k: fit.param(k) for k in ("A", "alpha", "B", "beta", "E")}
    eff = fit.param("eff[h]")
    expected = chinchilla_loss(out["N"], out["D"], eff, p)
    np.testing.assert_allclose(out["loss"], expected, rtol=1e-12)
    np.testing.assert_allclose(out["N_dense_equivalent"], out["N"] * eff)
    assert (out["loss_lo"] <= out["loss"]).all() and (out["loss"] <= out["loss_hi"]).all()
    dense = predict(fit, out["N_dense_equivalent"].iloc[:1], [2e10], format="none")
    assert dense["loss"].iloc[0] == pytest.approx(out["loss"].iloc[0], rel=1e-12)


@pytest.mark.parametrize("fmt", ["none", "h"])
def test_compute_optimal_is_the_minimum_along_the_budget(decoupled_fit, fmt):
    fit = decoupled_fit
    C = 1e22
    res = compute_optimal(fit, [C], format=fmt).iloc[0]

    def loss_at(logn):
        n = np.exp(logn)
        return predict(fit, [n], [C / (6 * n)], format=fmt)["loss"].iloc[0]

    best = minimize_scalar(loss_at, bounds=(np.log(1e6), np.log(1e14)), method="bounded",
                           options={"xatol": 1e-10})
    assert res["N_opt"] == pytest.approx(np.exp(best.x), rel=1e-4)
    assert res["loss"] == pytest.approx(best.fun, rel=1e-10)
    assert res["N_opt_lo"] <= res["N_opt"] <= res["N_opt_hi"]
    # a format with eff < 1 wants a bigger model at the same compute
    if fmt == "h":
        dense = compute_optimal(fit, [C], format="none").iloc[0]
        assert res["N_opt"] > dense["N_opt"]


def test_chinchilla_closed_form_matches_textbook():
    rows = [{"N": n, "D": d, "loss": chinchilla_loss(n, d)} for n, d in grid()]
    fit = fit_law(pd.DataFrame(rows), "chinchilla", n_bootstrap=0, heldout=False)
    C = 5.76e23
    a, b = TRUE["alpha"], TRUE["beta"]
    G = (a * TRUE["A"] / (b * TRUE["B"])) ** (1 / (a + b))
    res = compute_optimal(fit, C).iloc[0]
    assert res["N_opt"] == pytest.approx(G * (C / 6) ** (b / (a + b)), rel=1e-4)


def test_pareto_front():
    cost = np.array([4, 4, 8, 16, 2, 3])
    value = np.array([0.7, 0.6, 0.9, 1.0, 0.2, 0.2])
    assert pareto_front(cost, value).tolist() == [True, False, True, True, True, False]


@pytest.fixture
def fake_specs(monkeypatch):
    """Spec lookups without the formats library: GMSE, kind and bits from a small table."""
    gmse = {"q1": 0.3634, "q2": 0.1175, "q3": 0.0374, "q4": 0.0115, "q6": 7.3e-4, "q5": 0.003}
    bits = {"q1": 1, "q2": 2, "q3": 3, "q4": 4.25, "q6": 6, "q5": 5}
    monkeypatch.setattr(rep, "spec_gmse", lambda s: 0.0 if rep.is_dense(s) else gmse[s])
    monkeypatch.setattr(rep, "spec_kind", lambda s: "dense" if rep.is_dense(s) else "scalar")
    monkeypatch.setattr(rep, "spec_bits", lambda s: 16.0 if rep.is_dense(s) else float(bits[s]))
    return gmse


def test_compare_predicts_untrained_formats_from_gmse(fake_specs, rng):
    df = unified_table(rng)
    fit = fit_law(df, "unified", n_bootstrap=50, heldout=False)
    table = compare_formats(fit, ["q4", "q5", "q2/none", "q1"])
    by = table.set_index("format")
    nat = dict(zip(fit.law.natural_names, fit.natural))
    rho = lambda g: fit.law.rho(nat, g, "scalar")  # noqa: E731
    # both operands by default; W/A names them; q5 was never trained
    assert by.loc["q5", "rho"] == pytest.approx(rho(0.003) ** 2, rel=1e-10)
    assert not by.loc["q5", "trained"] and by.loc["q4", "trained"]
    assert by.loc["q5", "source"] == "capacity law at its GMSE"
    assert by.loc["q2/none", "rho"] == pytest.approx(rho(0.1175), rel=1e-10)
    r = by.loc["q4"]
    assert r["iso_memory_gain"] == pytest.approx(r["rho"] * 16 / 4.25)
    assert r["cost_linear"] == pytest.approx(4.25 / 16)
    assert r["cost_quadratic"] == pytest.approx(4.25 * 4.25 / 256)
    w_only = by.loc["q2/none"]
    assert w_only["cost_linear"] == 1.0  # a bf16 activation runs the multiply at 16 bits
    assert w_only["cost_quadratic"] == pytest.approx(2 * 16 / 256)
    assert list(table["rho"]) == sorted(table["rho"], reverse=True)
    assert (by["rho_lo"] <= by["rho"]).all() and (by["rho"] <= by["rho_hi"]).all()
    weights = compare_formats(fit, ["q2"], operands="weights").iloc[0]
    assert weights["rho"] == pytest.approx(rho(0.1175), rel=1e-10)


def test_compare_on_a_decoupled_fit_knows_only_fitted_formats(decoupled_fit):
    table = compare_formats(decoupled_fit)
    assert table["format"].tolist() == ["h"]
    assert np.isnan(table["iso_memory_gain"].iloc[0])  # a free label has no storage cost
    table = compare_formats(decoupled_fit, bits={"h": 4})
    assert table["iso_memory_gain"].iloc[0] == pytest.approx(decoupled_fit.param("eff[h]") * 4)
    with pytest.raises(CapscaleError, match="no fitted multiplier"):
        compare_formats(decoupled_fit, ["int3"])


def test_fit_json_round_trip(decoupled_fit, tmp_path):
    path = tmp_path / "fit.json"
    decoupled_fit.to_json(path)
    again = FitResult.load(path)
    q = pd.DataFrame({"N": [3e8], "D": [6e9], "format": ["h"], "loss": [1.0]})
    a, b = decoupled_fit.predict(q), again.predict(q)
    pd.testing.assert_frame_equal(a, b, rtol=1e-9)
    assert again.params["eff"]["h"] == pytest.approx(decoupled_fit.param("eff[h]"))
    assert again.intervals["eff"]["h"] == decoupled_fit.intervals["eff"]["h"]
    written = again.to_dict()
    for key in ("law", "params", "intervals", "rmse_loss", "rmse_log_loss", "heldout",
                "settings", "data"):
        assert key in written
    # one copy of the parameters: theta; the JSON's "params" is derived from it
    assert "params" not in again.info
    assert written["params"]["alpha"] == again.param("alpha") == decoupled_fit.param("alpha")
    assert written["params"]["eff"] == decoupled_fit.params["eff"]
    assert again.info["data"]["hash"].startswith("sha256:")


def test_loading_something_else_is_a_clear_error(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"a": 1}')
    with pytest.raises(CapscaleError, match="not a capscale fit"):
        FitResult.load(p)
    with pytest.raises(CapscaleError, match="does not exist"):
        FitResult.load(tmp_path / "missing.json")
