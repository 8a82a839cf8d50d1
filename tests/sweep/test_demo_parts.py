"""The demo's stage 3 on a hand-made runs table with known capacities: measured ρ beside the
GMSE prediction, and the summary records."""

import json

import numpy as np
import pandas as pd
import pytest

from capscale.demo import measure_capacity, summary_records
from capscale.errors import CapscaleError
from capscale.laws.measure import rho_gmse


def runs(noise=0.003, seed=0):
    rng = np.random.default_rng(seed)
    truth = {"int8": 0.98, "int4": 0.67, "int2": 0.2}
    rows = []
    for n in (6.7e3, 27e3, 60e3, 107e3, 240e3):
        for d in (262144, 524288, 1048576):
            rows.append({"N": n, "D": d, "w_format": "none", "a_format": "none", "rho": 1.0})
    for f, r in truth.items():
        rows += [{"N": n, "D": 1048576, "w_format": f, "a_format": f, "rho": r}
                 for n in (27e3, 60e3, 107e3)]
    df = pd.DataFrame(rows)
    df["loss"] = 2.0 + 60 * (df["N"] * df["rho"]) ** -0.35 + 150 * df["D"] ** -0.35
    df["loss"] += rng.normal(0, noise, len(df))
    return df.drop(columns="rho"), truth


class _Curve:
    """A stand-in for the QuEST unified fit: ρ from GMSE with the paper's constants."""

    def predict(self, q):
        return pd.DataFrame({"eff": [rho_gmse(q["w_format"][0], q["a_format"][0])]})


def test_stage3_measures_each_format_with_an_interval_beside_gmse():
    df, truth = runs()
    table = measure_capacity(df, _Curve(), n_bootstrap=200)
    assert "budget" in table.attrs["method"]
    got = table.set_index("format")
    for f, r in truth.items():
        row = got.loc[f"{f}/{f}"]
        assert row["rho"] == pytest.approx(r, abs=0.03)
        assert row["identified"] and row["lo"] <= row["rho"] <= row["hi"]
        assert row["rho_gmse"] == pytest.approx(rho_gmse(f, f))
        assert row["rho_quest_curve"] == pytest.approx(rho_gmse(f, f))
    records = summary_records(table)
    json.dumps(records)  # plain JSON
    assert {r["format"] for r in records} == {"int8/int8", "int4/int4", "int2/int2"}
    for r in records:
        assert set(r) >= {"format", "rho", "lo", "hi", "rho_gmse"}
        assert r["lo"] <= r["rho"] <= r["hi"]


def test_a_ladder_that_cannot_be_read_is_an_error_not_a_number():
    df, _ = runs()
    # no dense runs: nothing to measure ρ against
    alone = df[df["w_format"] != "none"].reset_index(drop=True)
    with pytest.raises(CapscaleError, match="dense"):
        measure_capacity(alone, _Curve(), n_bootstrap=20)
    # the dense curve rising with N at the budget: no ρ can be read off it
    flipped = df.copy()
    at = (flipped["w_format"] == "none") & (flipped["D"] == 1048576)
    flipped.loc[at, "loss"] = 3.0 + 1e-6 * flipped.loc[at, "N"]
    with pytest.raises(CapscaleError, match="does not fall with N"):
        measure_capacity(flipped, _Curve(), n_bootstrap=20)


def test_stage3_reads_the_quest_curve_of_the_demos_training_method():
    """The stage-2 fit keys its curves on the training method: the demo's query must name
    one (trust estimation, QuEST's "Trust"), as the real fit refuses a row without."""
    from capscale.demo import DEMO_METHOD, QUEST_GROUPS
    from capscale.laws import fit_law

    rng = np.random.default_rng(0)
    rows = [{"N": n, "D": d, "w_format": "none", "a_format": "none", "w_method": "none",
             "a_method": "none", "rho": 1.0} for n in (3e7, 5e7, 1e8) for d in (3e9, 1e10)]
    for f, r in (("int4", 0.67), ("int2", 0.2), ("int8", 0.98)):
        rows += [{"N": n, "D": 1e10, "w_format": f, "a_format": f, "w_method": DEMO_METHOD,
                  "a_method": DEMO_METHOD, "rho": r} for n in (3e7, 5e7, 1e8)]
    q = pd.DataFrame(rows)
    q["loss"] = 1.8 + 400 * (q["N"] * q["rho"]) ** -0.34 + 4e3 * q["D"] ** -0.3
    q["loss"] += rng.normal(0, 1e-3, len(q))
    unified = fit_law(q.drop(columns="rho"), "unified", capacity_groups=QUEST_GROUPS,
                      n_bootstrap=0, heldout=False)
    df, _ = runs()
    table = measure_capacity(df, unified, n_bootstrap=20)
    curve = table.set_index("format")["rho_quest_curve"]
    assert np.isfinite(curve).all()
    assert curve["int2/int2"] < curve["int4/int4"] < curve["int8/int8"]
    # a query without the method is refused by the real fit (what the demo once sent)
    bare = pd.DataFrame({"N": [1.0], "D": [1.0], "loss": [1.0], "w_format": ["int4"],
                         "a_format": ["int4"]})
    with pytest.raises(CapscaleError, match="method"):
        unified.predict(bare)
