"""Law forms: analytic gradients against finite differences, parametrisation round trips,
the published start grid, and clear errors when a table cannot identify a law."""

import numpy as np
import pandas as pd
import pytest

from capscale.errors import CapscaleError
from capscale.laws.forms import law_from_spec, make_law
from capscale.laws.optim import HuberObjective

LEVELS = {"q1": 0.3634, "q2": 0.1175, "q3": 0.0374, "q4": 0.01154, "q8": 6e-5}


def wa_table(n_sizes=4):
    """Weights/activations table with GMSE and kind columns (free labels, no spec lookups)."""
    rows = []
    for i, N in enumerate(np.geomspace(3e7, 3e8, n_sizes)):
        for w, a in [("none", "none"), ("q1", "q1"), ("q2", "q2"), ("q4", "q4"), ("q2", "none"),
                     ("q8", "q8"), ("s50", "none")]:
            rows.append({"N": N, "D": 100 * N, "w_format": w, "a_format": a,
                         "w_gmse": LEVELS.get(w, 0.3 if w == "s50" else np.nan),
                         "a_gmse": LEVELS.get(a, np.nan),
                         "w_kind": "sparse" if w == "s50" else ("dense" if w == "none" else "scalar"),
                         "a_kind": "dense" if a == "none" else "scalar",
                         "w_bits": 16 if w == "none" else (4 if w == "s50" else int(w[1])),
                         "a_bits": 16 if a == "none" else int(a[1]),
                         "sparsity": 0.5 if w == "s50" else (0.25 if i % 2 else 0.0),
                         "loss": 3.0 - 0.1 * i + 0.01 * len(w)})
    return pd.DataFrame(rows)


LAW_CASES = [
    ("chinchilla", {"pool_formats": True}),
    ("decoupled", {}),
    ("unified", {"capacity_groups": "kind+part"}),
    ("unified", {"capacity_groups": "single", "fix_L": 1.0}),
    ("unified", {"capacity_groups": "kind+part", "curve": "logistic"}),
    ("unified", {"capacity_groups": "kind+part", "curve": "logistic10"}),
    ("precision", {}),
    ("sparsity", {}),
]


def _table_for(name):
    df = wa_table()
    if name == "unified":
        # a third sparse level so that the sparse curve is identified
        extra = df[df["w_format"] == "s50"].copy()
        for label, g in (("s70", 0.5), ("s30", 0.15)):
            e = extra.copy()
            e["w_format"], e["w_gmse"] = label, g
            df = pd.concat([df, e], ignore_index=True)
        df["a_kind"] = np.where(df["a_format"] == "none", "dense", "scalar")
    if name == "sparsity":
        df = df.copy()
        df["sparsity"] = np.tile([0.0, 0.5, 0.75, 0.25, 0.0, 0.5, 0.75], len(df) // 7 + 1)[:len(df)]
    return df


@pytest.mark.parametrize("name, options", LAW_CASES)
def test_gradient_matches_finite_differences(name, options):
    df = _table_for(name)
    law = make_law(name, df, **options)
    X = law.design(df)
    rng = np.random.default_rng(0)
    for space, delta in (("log", 0.05), ("linear", 0.5)):  # mostly quadratic branch: smooth
        obj = HuberObjective(law, X, df["loss"].to_numpy(), delta=delta, space=space)
        grid = law.start_grid()
        sensible = grid[np.argsort(obj(grid)[0])[:50]]  # points where losses are realistic
        theta = sensible[rng.choice(50, 3, replace=False)]
        theta = theta + 0.05 * rng.standard_normal(theta.shape)
        f, g = obj(theta)
        assert np.isfinite(f).all()
        eps = 1e-6
        for j in range(law.n_params):
            e = np.zeros(law.n_params)
            e[j] = eps
            num = (obj(theta + e)[0] - obj(theta - e)[0]) / (2 * eps)
            np.testing.assert_allclose(g[:, j], num, rtol=1e-5, atol=1e-7,
                                       err_msg=f"{name} {law.param_names[j]} ({space})")


@pytest.mark.parametrize("name, options", LAW_CASES)
def test_natural_round_trip_and_spec(name, options):
    df = _table_for(name)
    law = make_law(name, df, **options)
    theta = law.start_grid()[:5] + 0.1
    np.testing.assert_allclose(law.from_natural(law.to_natural(theta)), theta, rtol=1e-12, atol=1e-12)
    again = law_from_spec(law.spec())
    assert again.param_names == law.param_names and again.centers == law.centers
    X1, X2 = law.design(df), again.design(df)
    np.testing.assert_allclose(law.log_predict(theta, X1), again.log_predict(theta, X2))


def test_chinchilla_grid_is_hoffmanns():
    df = wa_table()
    law = make_law("chinchilla", df, pool_formats=True)
    grid = law.to_natural(law.start_grid())
    assert grid.shape == (4500, 5)
    with np.errstate(divide="ignore"):
        logs = np.log(grid)
    assert sorted(np.unique(np.round(logs[:, 0], 9))) == [0, 5, 10, 15, 20, 25]
    assert sorted(np.unique(np.round(grid[:, 1], 9))) == [0, 0.5, 1, 1.5, 2]
    assert sorted(np.unique(np.round(logs[:, 4], 9))) == [-1, -0.5, 0, 0.5, 1]


def test_centred_terms_equal_the_plain_formula():
    df = wa_table()
    law = make_law("decoupled", df)
    nat = law.to_natural(law.start_grid()[123])
    nat[5:] = np.linspace(0.2, 0.9, len(nat) - 5)
    theta = law.from_natural(nat)
    pred = np.exp(law.log_predict(theta[None, :], law.design(df))[0])
    eff = {k: v for k, v in zip(law.keys, nat[5:])}
    keys = (df["w_format"] + "/" + df["a_format"]).tolist()
    N, D = df["N"].to_numpy(), df["D"].to_numpy()
    e = np.array([eff.get(k, 1.0) for k in keys])
    expected = nat[0] * (N * e) ** -nat[1] + nat[2] * D ** -nat[3] + nat[4]
    np.testing.assert_allclose(pred, expected, rtol=1e-12)


def test_unified_capacity_is_the_papers_tanh_form_and_multiplies_over_parts():
    df = wa_table()
    law = make_law("unified", df, capacity_groups="single")
    nat = law.to_natural(law.start_grid()[0])
    names = law.natural_names
    nat[names.index("L")], nat[names.index("F")], nat[names.index("C")] = 0.9, 0.41, 1.39
    theta = law.from_natural(nat)
    eff = law.eff(theta, law.design(df))[0]

    def rho(g):
        return 0.9 * np.tanh(0.41 * np.log(g) / np.log(0.25)) ** 1.39

    w = np.where(df["w_format"] == "none", 1.0, rho(df["w_gmse"].fillna(0.5)))
    a = np.where(df["a_format"] == "none", 1.0, rho(df["a_gmse"].fillna(0.5)))
    np.testing.assert_allclose(eff, w * a, rtol=1e-12)


def test_the_fitted_capacity_curve_is_the_capacity_probes_rho():
    """One ρ(GMSE): the unified law (its ρ, and the multiplier it fits through log ρ) and
    the capacity package's published curve are one formula, so they cannot drift apart."""
    from capscale.capacity import UNIFIED_LLAMA_C4, log_quarter, rho_unified

    df = wa_table()
    law = make_law("unified", df, capacity_groups="single")
    nat = law.to_natural(law.start_grid()[0])
    names = law.natural_names
    for k in ("L", "F", "C"):
        nat[names.index(k)] = UNIFIED_LLAMA_C4[k]
    g = np.array([0.5, 0.1, 0.0117, 1e-4])
    by_name = dict(zip(names, nat))
    np.testing.assert_array_equal(law.rho(by_name, g, "all"), rho_unified(g, **UNIFIED_LLAMA_C4))
    eff = law.eff(law.from_natural(nat), law.design(df))[0]
    w = np.where(df["w_format"] == "none", 1.0, rho_unified(df["w_gmse"].fillna(0.5), **UNIFIED_LLAMA_C4))
    a = np.where(df["a_format"] == "none", 1.0, rho_unified(df["a_gmse"].fillna(0.5), **UNIFIED_LLAMA_C4))
    np.testing.assert_allclose(eff, w * a, rtol=1e-13)
    assert log_quarter(4.0 ** -3) == pytest.approx(3.0, rel=1e-15)


def test_one_model_size_is_an_error():
    df = wa_table()
    df["N"] = 5e7
    with pytest.raises(CapscaleError, match="one value of N"):
        make_law("chinchilla", df, pool_formats=True)


def test_too_few_runs_for_the_parameters():
    df = wa_table().iloc[[0, 7, 14, 21]].assign(D=[1e9, 2e9, 4e9, 8e9])
    with pytest.raises(CapscaleError, match="more runs than parameters"):
        make_law("chinchilla", df, pool_formats=True)


def test_decoupled_needs_dense_runs():
    df = wa_table()
    df = df[df["w_format"] != "none"]
    with pytest.raises(CapscaleError, match="has none"):
        make_law("decoupled", df)


def test_unified_errors():
    df = wa_table()
    with pytest.raises(CapscaleError, match="'sparse' has 1"):
        make_law("unified", df)  # one sparse level cannot identify a tanh curve
    make_law("unified", df, capacity_groups="sparse=scalar")  # merged: identified
    with pytest.raises(CapscaleError, match="capacity groups"):
        make_law("unified", df, capacity_groups="nonsense")
    bad = df.copy()
    bad.loc[bad["w_format"] == "q1", "w_gmse"] = 1.5
    with pytest.raises(CapscaleError, match=r"GMSE must lie in \(0, 1\)"):
        make_law("unified", bad, capacity_groups="single")
    nodense = df[df["w_format"] != "none"]
    with pytest.raises(CapscaleError, match="fix_L"):
        make_law("unified", nodense, capacity_groups="single")
    make_law("unified", nodense, capacity_groups="single", fix_L=1.0)


def test_precision_and_sparsity_errors():
    df = wa_table()
    one_bits = df.assign(a_bits=8)
    with pytest.raises(CapscaleError, match="same a_format bits"):
        make_law("precision", one_bits)
    with pytest.raises(CapscaleError, match="three or more sparsities"):
        make_law("sparsity", df.assign(sparsity=np.where(df.index % 2, 0.5, 0.0)))
    with pytest.raises(CapscaleError, match="'sparsity' column"):
        make_law("sparsity", df.drop(columns=["sparsity"]))
    with pytest.raises(CapscaleError, match=r"\[0, 1\)"):
        make_law("sparsity", df.assign(sparsity=1.0))


def test_unknown_law_and_option():
    df = wa_table()
    with pytest.raises(CapscaleError, match="choose one of"):
        make_law("kaplan", df)
    with pytest.raises(CapscaleError, match="takes no option"):
        make_law("chinchilla", df, capacity_groups="single")


def test_decoupled_predicts_only_fitted_formats():
    df = wa_table()
    law = make_law("decoupled", df)
    new = df.iloc[[0]].assign(w_format="q3", a_format="q3")
    with pytest.raises(CapscaleError, match="no fitted multiplier"):
        law.design(new)


def test_split_composed_multiplies_sparse_and_scalar_capacities(monkeypatch):
    from capscale.laws import representation as rep

    gmse = {"s30": 0.09, "s50": 0.19, "s70": 0.33, "q2": 0.1188, "q3": 0.0374, "q4": 0.0115}
    monkeypatch.setattr(rep, "spec_gmse", lambda s: gmse[s])
    monkeypatch.setattr(rep, "spec_kind", lambda s: "sparse" if s.startswith("s") else "scalar")
    specs = ["none", "q2", "q3", "q4", "s30", "s50", "s70", "s50+q4", "s70+q3"]
    df = pd.DataFrame([{"N": n, "D": 50 * n, "format": f, "loss": 3.0}
                       for n in (3e7, 1e8, 3e8) for f in specs])
    law = make_law("unified", df, split_composed=True)
    assert law.groups == ["scalar", "sparse"]
    nat = law.to_natural(law.start_grid()[7])
    values = {"L[scalar]": 0.98, "F[scalar]": 0.4, "C[scalar]": 1.4,
              "L[sparse]": 1.0, "F[sparse]": 0.7, "C[sparse]": 2.0}
    for k, v in values.items():
        nat[law.natural_names.index(k)] = v
    eff = law.eff(law.from_natural(nat), law.design(df))[0]
    named = dict(zip(law.natural_names, nat))
    by_format = dict(zip(df["format"], eff))
    expected = law.rho(named, gmse["s50"], "sparse") * law.rho(named, gmse["q4"], "scalar")
    assert by_format["s50+q4"] == pytest.approx(expected, rel=1e-12)
    assert by_format["q4"] == pytest.approx(law.rho(named, gmse["q4"], "scalar"), rel=1e-12)
    assert by_format["none"] == 1.0
