"""Capacity measured from runs: the decoupled multipliers recovered from a known law, the
GMSE prediction against the closed form, ratios from joint bootstrap draws."""

import math

import numpy as np
import pandas as pd
import pytest

from capscale.laws.measure import (
    IDENTIFIED_WIDTH,
    describe_rho,
    is_identified,
    measured_capacity,
    ratio_interval,
    rho_gmse,
)

E, A, ALPHA, B, BETA = 2.0, 60.0, 0.35, 150.0, 0.35


def law(n, d, rho=1.0):
    return E + A * (n * rho) ** -ALPHA + B * d ** -BETA


def synthetic(rhos: dict, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """The study design: dense 4 sizes x 3 budgets spanning 4x; each format at 3 sizes."""
    rng = np.random.default_rng(seed)
    sizes, budgets = [27e3, 60e3, 107e3, 240e3], [262144, 524288, 1048576]
    rows = [{"N": n, "D": d, "w_format": "none", "a_format": "none", "rho": 1.0}
            for n in sizes for d in budgets]
    for (w, a), r in rhos.items():
        rows += [{"N": n, "D": 524288, "w_format": w, "a_format": a, "rho": r} for n in sizes[1:]]
    df = pd.DataFrame(rows)
    df["loss"] = [law(n, d, r) for n, d, r in zip(df["N"], df["D"], df["rho"])]
    df["loss"] += rng.normal(0, noise, len(df))
    return df.drop(columns="rho")


def test_rho_gmse_is_the_papers_tanh_curve_per_operand():
    from capscale.laws.representation import spec_gmse

    g4 = spec_gmse("int4")
    one = math.tanh(0.41 * math.log(g4) / math.log(0.25)) ** 1.39  # written out, not imported
    assert rho_gmse("int4", "none") == pytest.approx(one, rel=1e-12)
    assert rho_gmse("int4", "int4") == pytest.approx(one * one, rel=1e-12)
    assert rho_gmse("none", "none") == 1.0


def test_noise_free_runs_give_back_the_multipliers_they_were_drawn_with():
    truth = {("int8", "int8"): 0.98, ("int4", "int4"): 0.67, ("int2", "int2"): 0.2}
    table, fit = measured_capacity(synthetic(truth), n_bootstrap=0)
    got = dict(zip(table["format"], table["rho"]))
    for (w, a), r in truth.items():
        assert got[f"{w}/{a}"] == pytest.approx(r, rel=2e-3)
    assert (table["runs"] == 3).all()
    assert not table["identified"].any()  # no bootstrap: no interval, so nothing identified


def test_seed_noise_gives_intervals_that_hold_the_truth_and_identify_it():
    truth = {("int4", "int4"): 0.67, ("int2", "int2"): 0.2}
    table, fit = measured_capacity(synthetic(truth, noise=0.005, seed=1), n_bootstrap=100)
    for _, r in table.iterrows():
        assert r["identified"], r
        assert r["width"] < IDENTIFIED_WIDTH
        assert r["lo"] - 0.03 <= truth[tuple(r["format"].split("/"))] <= r["hi"] + 0.03
    # the ratio of the two from joint draws: its interval holds the true ratio
    v, lo, hi = ratio_interval(fit, "int2/int2", "int4/int4")
    assert lo < v < hi
    assert lo - 0.05 < 0.2 / 0.67 < hi + 0.05
    # a dense denominator counts as exactly one
    assert ratio_interval(fit, "int4/int4", "none/none")[0] == pytest.approx(
        table.set_index("format").loc["int4/int4", "rho"])


def test_a_wide_interval_is_not_identified_and_says_so():
    assert is_identified(0.5, 0.69)
    assert not is_identified(0.5, 0.71)
    assert not is_identified(math.nan, 0.6)
    row = {"rho": 0.6, "lo": 0.2, "hi": 0.9, "identified": False}
    assert describe_rho(row).startswith("not identified")
    row = {"rho": 0.6, "lo": 0.55, "hi": 0.65, "identified": True}
    assert describe_rho(row) == "0.600 [0.550, 0.650]"


def test_an_unidentified_rho_says_why_and_how_many_more_runs():
    """Runs at one budget whose scatter is large against the dense curve's slope: the table
    says each unidentified ρ's multiple of runs, from 1/√runs, and the sentence the scatter
    and slope (the slope is the law's α·A·N^(−α), a closed form)."""
    from capscale.laws.measure import curve_slope, why_not_identified

    df = synthetic({("int8", "int8"): 0.95, ("int2", "int2"): 0.2}, noise=0.2, seed=1)
    table, fit = measured_capacity(df, n_bootstrap=200, method="budget")
    t = table.set_index("format")
    assert not t.loc["int8/int8", "identified"]
    assert t.loc["int8/int8", "more_runs"] == pytest.approx(
        (t.loc["int8/int8", "width"] / IDENTIFIED_WIDTH) ** 2)
    assert t.loc["int8/int8", "more_runs"] > 1
    assert curve_slope(fit, 1e5) == pytest.approx(fit.alpha * fit.A * 1e5 ** -fit.alpha)
    why = why_not_identified(table)
    assert f"{fit.residual_sd:.3f} nats" in why and "per e-fold of N" in why
    assert "int8/int8 about" in why
    identified = table[table["identified"]]
    assert identified["more_runs"].isna().all()
