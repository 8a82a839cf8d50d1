"""`capscale plan`: the chosen design meets its target when simulated afresh, and its sweep
spec parses back with the cost the plan reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import capscale.cli as cli
from capscale.errors import CapscaleError
from capscale.laws.design import as_fit, simulate_design
from capscale.plan import candidates, hours_to_target, make_plan, plan_toml
from capscale.sweep.cost import estimate
from capscale.sweep.spec import spec_from_text

from .test_design import true_loss

SIZES = ["30k", "100k", "350k", "1M"]


@pytest.fixture(scope="module")
def prior():
    """The closed-form prior as a fit, made once (a callable prior costs a multi-start fit)."""
    return as_fit(candidates(["int4", "int2"], scale="cpu"), true_loss)


@pytest.fixture(scope="module")
def plan():
    return make_plan(["int4", "int2"], true_loss, target=0.03, noise=0.01, scale="cpu",
                     n_sims=200, seed=0)


def test_a_callable_prior_becomes_an_exact_fit(prior):
    cand = candidates(["int4", "int2"], scale="cpu")
    want = true_loss(cand)["loss"].to_numpy()
    np.testing.assert_allclose(prior.predict(cand)["loss"].to_numpy(), want, rtol=1e-6)


def test_confirmed_halfwidths_meet_the_target(plan):
    assert plan.met
    assert (plan.confirmed["half_width"] <= 0.03).all()
    # an independent confirmation: other noise draws, more of them
    again = simulate_design(plan.runs, true_loss, noise=0.01, n_sims=600, seed=99)
    assert (again["half_width"] <= 0.03 * 1.1).all()
    assert again["identified"].all()


def test_the_plan_is_cheaper_than_replicating_the_full_grid(plan):
    full = plan.comparisons["full grid (every candidate, one seed)"]
    hw = full["confirmed"]["half_width"].to_numpy()
    assert plan.hours < hours_to_target(full["hours"], hw, 0.03)


def test_toml_parses_back_with_the_plan_cost(plan):
    text = plan_toml(plan, name="p", scale="cpu")
    spec = spec_from_text(text)
    assert len(spec.runs) == len(plan.runs)
    assert estimate(spec).accelerator_hours == pytest.approx(plan.hours, rel=1e-9)
    got = sorted((r.config.w_format, r.config.size, r.config.tokens_per_param, r.config.seed)
                 for r in spec.runs)
    want = sorted(zip(plan.runs["w_format"], plan.runs["size"], plan.runs["tokens_per_param"],
                      plan.runs["seed"]))
    assert got == want


def test_candidates_price_runs_like_the_sweep():
    cand = candidates(["int4"], scale="cpu")
    assert set(cand["size"]) == set(SIZES)
    assert set(cand["w_format"]) == {"none", "int4"}
    # longer runs cost proportionally more (FLOPs are linear in tokens)
    a = cand[(cand["size"] == "1M") & (cand["tokens_per_param"] == 10) & (cand["w_format"] == "none")]
    b = cand[(cand["size"] == "1M") & (cand["tokens_per_param"] == 40) & (cand["w_format"] == "none")]
    assert float(b["hours"].iloc[0]) == pytest.approx(4 * float(a["hours"].iloc[0]), rel=2e-2)  # whole steps


def test_sequential_design_with_enough_runs_done_adds_nothing(plan, prior):
    done = plan.runs.assign(loss=true_loss(plan.runs)["loss"].to_numpy())
    again = make_plan(["int4", "int2"], prior, target=0.03, noise=0.01, scale="cpu",
                      n_sims=200, done=done, compare_grids=False)
    assert len(again.runs) == 0 and again.hours == 0 and again.met


def test_sequential_design_adds_runs_to_a_partial_sweep(plan, prior):
    done = plan.runs[plan.runs["seed"] == 0].head(4)
    done = done.assign(loss=true_loss(done)["loss"].to_numpy())
    again = make_plan(["int4", "int2"], prior, target=0.03, noise=0.01, scale="cpu",
                      n_sims=200, done=done, compare_grids=False)
    assert again.met and len(again.runs) > 0
    both = pd.concat([done, again.runs], ignore_index=True)
    assert (simulate_design(both, true_loss, noise=0.01, n_sims=300, seed=5)["half_width"]
            <= 0.03 * 1.1).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"target": 0.0}, "--target"),
    ({"target": 0.03, "n_sims": 50}, "200"),
    ({"target": 0.03, "scale": "huge"}, "--scale"),
])
def test_bad_plan_arguments(kwargs, match):
    with pytest.raises(CapscaleError, match=match):
        make_plan(["int4"], true_loss, noise=0.01, **kwargs)


def test_dense_format_is_not_a_format_to_measure():
    with pytest.raises(CapscaleError, match="dense"):
        candidates(["none"], scale="cpu")


def test_cli_plan_json_and_toml(tmp_path, capsys, prior):
    prior.to_json(tmp_path / "prior.json")
    out = tmp_path / "plan.toml"
    code = cli.main(["plan", "--format", "int4", "--format", "int2", "--target", "0.05",
                     "--prior", str(tmp_path / "prior.json"), "--noise", "0.01", "--scale", "cpu",
                     "--sims", "200", "-o", str(out), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert res["met"] and res["runs"]
    assert set(res["runs"][0]) >= {"N", "D", "w_format", "a_format", "seed"}
    assert set(res["half_width"]) == {"int4/int4", "int2/int2"}
    spec = spec_from_text(out.read_text())
    assert estimate(spec).accelerator_hours == pytest.approx(res["hours"], rel=1e-9)
    # a target that is no number, and a prior without residuals and no --noise: exit 2
    with pytest.raises(SystemExit) as e:  # the number grammar rejects it while parsing
        cli.main(["plan", "--format", "int4", "--target", "-1", "--prior",
                  str(tmp_path / "prior.json"), "--noise", "0.01", "--scale", "cpu"])
    assert e.value.code == 2
    assert "--target" in capsys.readouterr().err
    assert cli.main(["plan", "--format", "int4", "--target", "0.05", "--prior",
                     str(tmp_path / "prior.json"), "--scale", "cpu"]) == 2
    assert "--noise" in capsys.readouterr().err


def test_cli_sequential_reports_what_is_measured(tmp_path, capsys, prior, plan):
    prior.to_json(tmp_path / "prior.json")
    done = plan.runs.assign(loss=true_loss(plan.runs)["loss"].to_numpy()
                            * np.exp(0.0005 * np.random.default_rng(1).standard_normal(len(plan.runs))))
    done.to_csv(tmp_path / "runs.csv", index=False)
    code = cli.main(["plan", "--format", "int4", "--format", "int2", "--target", "0.03",
                     "--prior", str(tmp_path / "prior.json"), "--noise", "0.01", "--scale", "cpu",
                     "--sims", "200", "--runs", str(tmp_path / "runs.csv"), "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["runs"] == [] and res["met"]
    m = res["measured"]["formats"]
    assert m["int4/int4"]["rho"] == pytest.approx(0.7, abs=0.02) and m["int4/int4"]["met"]
