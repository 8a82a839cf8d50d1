"""Large runs tables: the start search on a subsample ends at the optimum the full search
finds, and the per-row representation helpers equal their row-by-row definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from capscale.laws import fit as fit_mod
from capscale.laws import representation as rep
from capscale.laws.fit import fit_law, search_subsample
from capscale.laws.forms import make_law

from .conftest import chinchilla_loss


def _table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    fmt = rng.choice(["none", "int4", "int2"], n)
    eff = pd.Series(fmt).map({"none": 1.0, "int4": 0.7, "int2": 0.3}).to_numpy()
    N = np.exp(rng.uniform(np.log(2e7), np.log(1e9), n))
    D = N * np.exp(rng.uniform(np.log(10), np.log(100), n))
    loss = chinchilla_loss(N, D, eff) * np.exp(0.005 * rng.standard_normal(n))
    return pd.DataFrame({"N": N, "D": D, "format": fmt, "loss": loss})


def test_subsampled_search_ends_at_the_full_search_optimum(monkeypatch):
    df = _table(600)
    full = fit_law(df, "decoupled", n_bootstrap=0, heldout=False, max_starts=600)
    monkeypatch.setattr(fit_mod, "SEARCH_ROWS", 120)
    lines = []
    monkeypatch.setattr(fit_mod, "_say", lambda on, m: lines.append(m))
    sub = fit_law(df, "decoupled", n_bootstrap=0, heldout=False, max_starts=600, progress=True)
    assert sub.info["search"]["search_rows"] <= 121 and sub.info["search"]["n_continued"] > 1
    assert sub.info["search"]["n_starts"] == full.info["search"]["n_starts"]
    np.testing.assert_allclose(sub.natural, full.natural, rtol=1e-5)
    assert any("searching 600 starts on" in m for m in lines)


def test_search_subsample_keeps_every_representation():
    df = _table(5000)
    df.loc[:9, "format"] = "int8"  # a rare one
    law = make_law("decoupled", df)
    idx = search_subsample(df, law, 500)
    assert len(idx) == len(set(idx)) and np.all(np.diff(idx) > 0)
    assert set(df["format"].iloc[idx]) == set(df["format"])
    assert (df["format"].iloc[idx] == "int8").sum() == 10
    assert np.array_equal(idx, search_subsample(df, law, 500))  # fixed


@pytest.mark.parametrize("cols", [["format"], ["w_format", "a_format"]])
def test_representation_helpers_equal_their_row_by_row_definitions(cols):
    rng = np.random.default_rng(1)
    specs = ["none", "bf16", "int4", "int8", "int4:had", "2:4+int4"]
    df = pd.DataFrame({c: rng.choice(specs, 300) for c in cols})
    df["N"], df["D"], df["loss"] = 1e8, 2e9, 3.0
    dense = [all(rep.is_dense(df[c].iloc[i]) for c in cols) for i in range(len(df))]
    assert rep.dense_rows(df).tolist() == dense
    keys = ["/".join(str(df[c].iloc[i]) for c in cols) for i in range(len(df))]
    assert rep.representation_keys(df) == keys
    for split in (False, True):
        for slot in rep.part_table(df, split_composed=split):
            col = slot["name"].split("[")[0]
            j = int(slot["name"].split("[")[1][:-1]) if "[" in slot["name"] else 0
            for i, spec in enumerate(df[col]):
                comps = rep.split_components(spec) if split else [spec]
                if rep.is_dense(spec) or j >= len(comps):
                    assert slot["kind"][i] == "dense" and slot["gmse"][i] == 0
                else:
                    assert slot["gmse"][i] == rep.spec_gmse(comps[j])
                    assert slot["kind"][i] == rep.spec_kind(comps[j])
    bits = rep.part_bits(df)
    for c in cols:
        assert bits[c].tolist() == [rep.spec_bits(s) for s in df[c]]
