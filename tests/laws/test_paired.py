"""Paired comparison against closed forms computed here from the fit's own samples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from capscale.errors import CapscaleError
from capscale.laws import fit_law
from capscale.laws.paired import paired_compare, parse_memory

from .conftest import noisy

EFF = {"none": 1.0, "int2": 0.3, "int3": 0.5, "int4": 0.7}


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(7)
    rows = [{"N": n, "D": r * n, "w_format": f, "a_format": f}
            for n in (2e7, 5e7, 1e8, 2e8) for r in (20, 80) for f in EFF]
    df = pd.DataFrame(rows)
    e = df["w_format"].map(EFF).to_numpy()
    df["loss"] = noisy(400 * (df["N"] * e) ** -0.34 + 2000 * df["D"] ** -0.36 + 1.8, 0.004, rng)
    return df


@pytest.fixture(scope="module")
def decoupled(table):
    return fit_law(table, "decoupled", n_bootstrap=200, heldout=False, n_jobs=1)


@pytest.fixture(scope="module")
def unified(table):
    return fit_law(table, "unified", capacity_groups="single", n_bootstrap=200, heldout=False,
                   n_jobs=1)


def test_decoupled_probability_is_the_share_of_resamples_ranking_a_first(decoupled):
    res = paired_compare(decoupled, ["int4", "int3"], N=1e9, D=2e10)
    pair = res["pairs"].iloc[0]
    names = decoupled.law.natural_names
    nat = decoupled.law.to_natural(decoupled.samples)
    e4, e3 = nat[:, names.index("eff[int4/int4]")], nat[:, names.index("eff[int3/int3]")]
    assert pair["p_A_better"] == pytest.approx(np.mean(e4 > e3))  # same N: higher ρ, lower loss
    lo, hi = np.percentile(e4 - e3, [2.5, 97.5])
    assert pair["d_rho_lo"] == pytest.approx(lo, rel=1e-9)
    assert pair["d_rho_hi"] == pytest.approx(hi, rel=1e-9)
    assert pair["basis"] == "fitted multipliers"
    # the paired interval of the difference is narrower than the marginal ones suggest
    f = res["formats"].set_index("format")
    assert pair["d_loss_hi"] - pair["d_loss_lo"] < (f.loc["int4", "loss_hi"] - f.loc["int4", "loss_lo"])


def test_one_curve_ranks_by_gmse_alone(unified):
    res = paired_compare(unified, ["nvfp4", "mxfp4", "int4"], N=1e9, D=2e10)
    p = res["pairs"].set_index(["A", "B"])
    # GMSE on N(0,1): nvfp4 < int4 (0.01154) < mxfp4, so every resample ranks them so
    assert p.loc[("nvfp4", "mxfp4"), "p_A_better"] == 1.0
    assert p.loc[("nvfp4", "int4"), "p_A_better"] == 1.0
    assert p.loc[("mxfp4", "int4"), "p_A_better"] == 0.0
    assert p["basis"].str.startswith("GMSE order alone").all()
    # ρ per resample from the curve's closed form, W and A parts multiplied
    nat = unified.law.to_natural(unified.samples)
    names = unified.law.natural_names
    L, F, C = (nat[:, names.index(k)] for k in ("L", "F", "C"))

    def rho(g):
        return (L * np.tanh(F * math.log(g) / math.log(0.25)) ** C) ** 2

    from capscale.laws.representation import spec_gmse

    d = rho(spec_gmse("nvfp4")) - rho(spec_gmse("int4"))
    lo, hi = np.percentile(d, [2.5, 97.5])
    assert p.loc[("nvfp4", "int4"), "d_rho_lo"] == pytest.approx(lo, rel=1e-6)
    assert p.loc[("nvfp4", "int4"), "d_rho_hi"] == pytest.approx(hi, rel=1e-6)


def test_equal_memory_and_compute_sizes(unified):
    res = paired_compare(unified, ["nvfp4", "int8"], N=1e9, D=2e10, memory="4GB",
                         equal_compute=True)
    f = res["formats"]
    mem = f[f["scenario"].str.startswith("equal memory")].set_index("format")
    # NVFP4: 4-bit E2M1 values and one E4M3 scale per 16 values = 4.5 bits per value
    assert mem.loc["nvfp4", "N"] == pytest.approx(4e9 * 8 / 4.5, rel=1e-5)
    lin = f[f["scenario"] == "equal compute, linear bit-ops"].set_index("format")
    quad = f[f["scenario"] == "equal compute, quadratic bit-ops"].set_index("format")
    assert lin.loc["nvfp4", "N"] == pytest.approx(1e9 * 16 / 4.5, rel=1e-5)
    assert quad.loc["nvfp4", "N"] == pytest.approx(1e9 * 256 / 4.5**2, rel=1e-5)
    assert set(res["pairs"]["scenario"]) == {"same N", "equal memory (4 GB of weights)",
                                             "equal compute, linear bit-ops",
                                             "equal compute, quadratic bit-ops"}


@pytest.mark.parametrize("text, want", [("4GB", 4e9), ("512 MB", 512e6), ("8GiB", 8 * 2**30),
                                        ("1e9", 1e9)])
def test_parse_memory(text, want):
    assert parse_memory(text) == want


@pytest.mark.parametrize("text", ["four", "-1GB", "4XB"])
def test_bad_memory(text):
    with pytest.raises(CapscaleError, match="memory"):
        parse_memory(text)


def test_errors(decoupled):
    with pytest.raises(CapscaleError, match="two or more"):
        paired_compare(decoupled, ["int4"], N=1e9, D=2e10)
    with pytest.raises(CapscaleError, match="cannot compare"):
        paired_compare(decoupled, ["int4", "nvfp4"], N=1e9, D=2e10)


def test_cli_paired(only_laws_cli, decoupled, tmp_path, capsys):
    decoupled.to_json(tmp_path / "fit.json")
    assert only_laws_cli(["compare", str(tmp_path / "fit.json"), "int4", "int2",
                          "--n", "1e9", "--d", "2e10"]) == 0
    out = capsys.readouterr().out
    assert "P(int4 better) = 1.000" in out and "paired" in out
    assert only_laws_cli(["compare", str(tmp_path / "fit.json"), "int4", "--n", "1e9",
                          "--d", "2e10"]) == 2
