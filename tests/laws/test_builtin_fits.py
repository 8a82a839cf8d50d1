"""Builtin fits: the published capacity curve against its closed form, the cache, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from capscale.errors import CapscaleError
from capscale.laws import predict
from capscale.laws.builtin_fits import build, builtin_fit, load_fit


def paper_rho(gmse, L=1.0, F=0.41, C=1.39):
    """ρ = L·tanh(F·log_{1/4} GMSE)^C, the unified paper's Llama/C4 constants."""
    return L * math.tanh(F * math.log(gmse) / math.log(0.25)) ** C


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSCALE_CACHE", str(tmp_path))
    return tmp_path


def test_paper_curve_gives_rho_of_weights_times_activations(cache):
    fit = load_fit("builtin:unified-paper")
    # GMSE of the MSE-optimal 4-bit uniform grid on N(0,1): 0.01154288 (published)
    p = predict(fit, 1e9, 2e10, w_format="int4", a_format="int4").iloc[0]
    assert p["eff"] == pytest.approx(paper_rho(0.01154288) ** 2, rel=1e-4)
    assert p["eff_lo"] < p["eff"] < p["eff_hi"]
    assert math.isnan(p["loss"])  # A and B are not published
    w_only = predict(fit, 1e9, 2e10, w_format="int4", a_format="none").iloc[0]
    assert w_only["eff"] == pytest.approx(paper_rho(0.01154288), rel=1e-4)
    assert fit.info["provenance"]["builtin"] == "builtin:unified-paper"


def test_builtin_fits_are_cached(cache):
    first = builtin_fit("unified-paper")
    files = list((cache / "fits").glob("unified-paper-*.json"))
    assert len(files) == 1
    second = builtin_fit("unified-paper")
    np.testing.assert_allclose(second.samples, first.samples, rtol=1e-10)
    files[0].write_text("{ damaged")
    assert builtin_fit("unified-paper").info["provenance"]["builtin"] == "builtin:unified-paper"


def test_unknown_builtin_fit(cache):
    with pytest.raises(CapscaleError, match="builtin:quest-unified"):
        load_fit("builtin:nope")


@pytest.mark.slow
def test_quest_decoupled_reproduces_quests_multiplier():
    fit = build("quest-decoupled", n_bootstrap=0)
    # QuEST's own notebook: W4A4 with Hadamard about 0.69 (README, within 0.025)
    assert fit.param("eff[int4:had/int4:had]") == pytest.approx(0.69, abs=0.025)
    assert fit.info["provenance"]["data_sha256"]
