"""ρ at one budget: the decoupled law's N-part fitted to the dense runs at the budget the
compressed runs share and each format's level on it, against a general least-squares fitter
(scipy's curve_fit), closed-form data, and interval coverage over repeated noisy designs."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit

from capscale.errors import CapscaleError
from capscale.laws.budget_fit import fit_at_budget
from capscale.laws.measure import measured_capacity, ratio_interval, shared_budget

E, A, ALPHA, B, BETA = 2.0, 60.0, 0.35, 150.0, 0.35
D_STAR = 1048576
SIZES = [6.7e3, 27e3, 60e3, 107e3, 240e3]
TRUTH = {"int8": 0.97, "int4": 0.67, "int2": 0.2}


def law(n, d, rho=1.0):
    return E + A * (n * rho) ** -ALPHA + B * d ** -BETA


def design(noise=0.0, seed=0, truth=TRUTH, extra_budgets=True):
    """Dense at five sizes at D* (and two shorter budgets), each format at three sizes at D*."""
    rng = np.random.default_rng(seed)
    rows = [{"N": n, "D": D_STAR, "w_format": "none", "a_format": "none", "rho": 1.0}
            for n in SIZES]
    if extra_budgets:
        rows += [{"N": n, "D": d, "w_format": "none", "a_format": "none", "rho": 1.0}
                 for n in SIZES[:3] for d in (D_STAR // 4, D_STAR // 2)]
    for f, r in truth.items():
        rows += [{"N": n, "D": D_STAR, "w_format": f, "a_format": f, "rho": r}
                 for n in SIZES[1:4]]
    df = pd.DataFrame(rows)
    df["loss"] = [law(n, d, r) for n, d, r in zip(df["N"], df["D"], df["rho"])]
    df["loss"] += rng.normal(0, noise, len(df))
    return df.drop(columns="rho")


def test_noise_free_runs_give_back_rho_and_the_curve_at_the_budget():
    table, fit = measured_capacity(design(), n_bootstrap=0)
    assert fit.budget == D_STAR
    got = dict(zip(table["format"], table["rho"]))
    for f, r in TRUTH.items():
        assert got[f"{f}/{f}"] == pytest.approx(r, rel=1e-4)
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-4)
    assert fit.E == pytest.approx(E + B * D_STAR ** -BETA, rel=1e-4)  # E* absorbs the D term
    assert fit.A == pytest.approx(A, rel=1e-3)
    assert "budget" in table.attrs["method"]


def test_point_estimates_match_a_general_least_squares_fit():
    """The curve by a general fitter on the dense runs, then each format's log ρ by a general
    fitter on its own runs with the curve held."""
    df = design(noise=0.01, seed=3)
    df = df[df["D"] == D_STAR].reset_index(drop=True)
    keys = ["int2", "int4", "int8"]
    k = np.array([-1 if w == "none" else keys.index(w) for w in df["w_format"]])
    n, y = df["N"].to_numpy(), df["loss"].to_numpy()
    dense = k < 0
    (e, a, alpha), _ = curve_fit(lambda n, e, a, al: e + a * n ** -al, n[dense], y[dense],
                                 p0=[2.1, 50, 0.3], maxfev=20000)
    fit = fit_at_budget(df["N"], df["loss"], k, keys, ["none/none"], D_STAR, n_bootstrap=0)
    assert fit.alpha == pytest.approx(alpha, rel=1e-3)
    assert fit.E == pytest.approx(e, rel=1e-3)
    for i, key in enumerate(keys):
        (u,), _ = curve_fit(lambda n, u: e + a * np.exp(-alpha * (np.log(n) + u)), n[k == i],
                            y[k == i], p0=[0.0])
        assert fit.rho[key] == pytest.approx(math.exp(u), rel=1e-3)


def test_a_format_off_the_law_moves_no_other_rho():
    """A format whose loss barely falls with N (LSQ on the CPU ladder) sets only its own level:
    every other ρ, and every other ρ's bootstrap draws, stay as they were without it."""
    df = design(noise=0.01, seed=4, extra_budgets=False)
    flat = df[df["w_format"] == "int4"].assign(w_format="int3", a_format="int3")  # made flat:
    flat["loss"] = 3.9 - 0.01 * np.log(flat["N"])
    _, fit0 = measured_capacity(df, n_bootstrap=100, seed=2)
    _, fit1 = measured_capacity(pd.concat([df, flat], ignore_index=True), n_bootstrap=100,
                                seed=2)
    assert fit1.alpha == fit0.alpha and fit1.E == fit0.E
    assert "int3/int3" in fit1.keys and fit1.keys.index("int4/int4") != fit0.keys.index("int4/int4")
    for key in fit0.keys:
        assert fit1.rho[key] == pytest.approx(fit0.rho[key], rel=1e-12)
        np.testing.assert_array_equal(fit1.draws[key], fit0.draws[key])


def test_three_dense_sizes_take_their_scatter_from_the_formats_not_from_one_off_the_law():
    """Three dense runs fit the curve exactly and have no residuals of their own; the scatter
    they are resampled with is the median of the formats' own, so a flat, scattered format
    cannot blow up every other format's interval (drawn from all residuals, some resampled
    dense curves stopped falling and left no interval at all)."""
    rng = np.random.default_rng(5)
    n = np.array(SIZES[1:4])
    good_n = np.repeat(n, 2)
    rows = ([(x, law(x, D_STAR), -1) for x in n]
            + [(x, law(x, D_STAR, 0.6) + rng.normal(0, 0.01), 0) for x in good_n]
            + [(x, law(x, D_STAR, 0.3) + rng.normal(0, 0.01), 1) for x in good_n])
    flat = [(x, 3.9 + rng.normal(0, 0.3), 2) for x in good_n]
    N, y, k = map(np.array, zip(*rows))
    base = fit_at_budget(N, y, k, ["good", "other"], ["d"], D_STAR, n_bootstrap=200)
    N2, y2, k2 = map(np.array, zip(*(rows + flat)))
    with_flat = fit_at_budget(N2, y2, k2, ["good", "other", "flat"], ["d"], D_STAR,
                              n_bootstrap=200)
    for key in ("good", "other"):
        lo, hi = with_flat.interval(key)
        lo0, hi0 = base.interval(key)
        assert lo < with_flat.rho[key] == base.rho[key] < hi
        assert (hi - lo) / (hi0 - lo0) == pytest.approx(1.0, abs=0.25)


def test_intervals_cover_the_truth_over_repeated_noisy_designs():
    hits, widths = [], []
    for s in range(30):
        table, _ = measured_capacity(design(noise=0.006, seed=100 + s), n_bootstrap=150, seed=s)
        for _, r in table.iterrows():
            hits.append(r["lo"] <= TRUTH[r["w_format"]] <= r["hi"])
            widths.append(r["width"])
    # a residual bootstrap on 3 runs per format is somewhat narrow; well above chance
    assert np.mean(hits) >= 0.75
    assert np.median(widths) < 0.2


def test_ratio_of_two_capacities_from_the_joint_draws():
    table, fit = measured_capacity(design(noise=0.004, seed=1), n_bootstrap=200)
    v, lo, hi = ratio_interval(fit, "int2/int2", "int4/int4")
    assert lo < v < hi
    assert v == pytest.approx(fit.rho["int2/int2"] / fit.rho["int4/int4"])
    assert ratio_interval(fit, "int4/int4", "none/none")[0] == pytest.approx(fit.rho["int4/int4"])


def test_a_loss_linear_in_log_n_keeps_the_floor_at_zero():
    n = np.array(SIZES)
    y = 5.0 - 0.15 * np.log(n)
    y_c = 5.0 - 0.15 * (np.log(n[1:4]) + math.log(0.5))
    fit = fit_at_budget(np.r_[n, n[1:4]], np.r_[y, y_c], [-1] * 5 + [0] * 3, ["q"], ["d"],
                        D_STAR, n_bootstrap=0)
    assert fit.E == 0.0
    assert fit.rho["q"] == pytest.approx(0.5, rel=0.05)


def test_designs_that_cannot_use_one_budget():
    df = design()
    assert shared_budget(df) == D_STAR
    moved = df.copy()
    moved.loc[moved["w_format"] == "int2", "D"] = D_STAR // 2
    assert shared_budget(moved) is None  # compressed runs at two budgets: the whole law
    few = df[(df["w_format"] != "none") | (df["N"] < 30e3) | (df["D"] != D_STAR)]
    assert shared_budget(few) is None  # two dense sizes at D*
    with pytest.raises(CapscaleError, match="3 or more sizes"):
        measured_capacity(few, method="budget")
    with pytest.raises(CapscaleError, match="3 or more sizes"):
        fit_at_budget([1e4, 2e4, 1e4], [3.0, 2.9, 3.1], [-1, -1, 0], ["q"], ["d"], D_STAR)
