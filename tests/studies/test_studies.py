"""Studies: every spec expands at both scales into the dense ladder plus its points, the
analysis recovers known capacities from tiny synthetic runs tables and judges the paper's
claims on them, and a study started again re-runs nothing finished (tiny real runs)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import capscale.studies as st
import capscale.studies.catalog as catalog
import capscale.studies.ladder as ladder
from capscale.cli import main
from capscale.errors import CapscaleError
from capscale.laws import representation as rep

E, A, ALPHA, B, BETA = 2.0, 60.0, 0.35, 150.0, 0.35


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("name", list(st.studies()))
def test_every_study_expands_into_its_dense_ladder_and_points(name, scale):
    s = st.study(name).at(scale)
    spec = st.study_spec(name, scale)  # expanding checks every run's formats fit its model
    dense = [r for r in spec.runs if rep.is_dense(r.config.w_format) and rep.is_dense(r.config.a_format)]
    lad = st.study_ladder(s, scale)
    # one dense run per size and length, one per seed at the compressed budget
    assert len(dense) == len(lad.dense_sizes) * (len(lad.dense_lengths) - 1 + len(lad.dense_seeds))
    assert len(spec.runs) == len(dense) + len(s.points) * len(lad.compressed_sizes) * len(
        lad.compressed_seeds)
    at_budget = [r for r in spec.runs if r.tokens == max(x.tokens for x in spec.runs)]
    assert {r.config.seed for r in at_budget if r in dense} == set(lad.dense_seeds)
    assert {r.config.seed for r in at_budget if r not in dense} == set(lad.compressed_seeds)
    assert {r.config.seed for r in dense if r not in at_budget} == {0}
    # token budgets spanning 4x at every dense size
    for size in {r.n_params for r in dense}:
        d = sorted(r.tokens for r in dense if r.n_params == size)
        assert d[-1] / d[0] == pytest.approx(4.0, rel=0.02)
    # every check's representations are runs of the study (or dense)
    keys = {s.key(p) for p in s.points}
    for c in s.checks:
        for k in (c.num, *c.den):
            assert k in keys, (name, k)
    if scale == "cpu":
        assert max(r.tokens for r in spec.runs) <= 1.5e6  # under one epoch of the corpus
        assert min(r.steps for r in spec.runs) >= 250
        assert {r.config.data for r in spec.runs} == {"builtin:wiki"}
    else:
        assert {r.config.data for r in spec.runs} == {"c4"}
        assert all(r.tokens / r.n_params == pytest.approx(100, rel=0.01)
                   for r in spec.runs if r not in dense)


def test_the_groups_study_takes_groups_the_cpu_models_can_hold():
    """Groups of 32 and 128 do not divide the CPU ladder's widths (24-40, MLP down projections
    72-120): at CPU scale the study groups in 2, 4 and 8, and keeps the paper's 8-128 there."""
    s = st.study("groups")
    cpu = {p["w_format"] for p in s.at("cpu").points}
    paper = {p["w_format"] for p in s.at("paper").points}
    assert {"int2:absmax:g2", "int4:absmax:g8", "outliers0.05+int2:absmax:g8"} <= cpu
    assert not any(f.endswith(("g32", "g128")) for f in cpu)
    assert {"int2:absmax:g128", "outliers0.05+int2:absmax:g128"} <= paper
    assert [c.claim for c in s.at("cpu").checks][0] == "INT2: ρ(g2) > ρ(g8)"
    assert [c.claim for c in s.at("paper").checks][0] == "INT2: ρ(g8) > ρ(g128)"
    assert s.at("cpu").cpu_seeds == s.cpu_seeds and s.at("cpu").at_scale == {}
    # a runs table's keys say which scale's claims to check
    assert s.scale_of(["int2:absmax:g128/none", "int2:absmax:g8/none", "none/none"]) == "paper"
    assert s.scale_of(["int2:absmax:g2/none", "int2:absmax:g8/none"]) == "cpu"
    assert st.study("fp").scale_of(["int4/int4"]) == "cpu"
    with pytest.raises(CapscaleError, match="scale 'gpu'"):
        s.at("gpu")


def test_the_demo_sweep_is_a_part_of_the_cpu_ladder_with_int8_int4_int2():
    """The demo trains a subset of the CPU ladder's runs (same names, so a study reuses them):
    every size at two budgets spanning 4x, both seeds at the compressed budget, and INT8,
    INT4 and INT2 at every compressed size."""
    from capscale.demo import demo_spec_path
    from capscale.sweep import load_spec, spec_from_dict

    demo = load_spec(demo_spec_path())
    lad = st.scale_ladder("cpu")
    d = ladder.spec_dict("demo", lad,
                         [{"w_format": f, "a_format": f} for f in ("int8", "int4", "int2")])
    ladder_runs = {r.name: r for r in spec_from_dict(d).runs}
    assert {r.name for r in demo.runs} <= set(ladder_runs)
    for r in demo.runs:  # same settings as the ladder's run of that name
        assert r.config == ladder_runs[r.name].config
    dense = [r for r in demo.runs if r.config.w_format == "none"]
    budget = lad.compressed_length["tokens"]
    for size in lad.dense_sizes:
        tokens = sorted(r.tokens for r in dense if r.config.size == size)
        assert tokens[-1] / tokens[0] == pytest.approx(4.0)
        assert {r.config.seed for r in dense if r.config.size == size and r.tokens == budget} \
            == set(lad.dense_seeds)
    for f in ("int8", "int4", "int2"):
        assert {r.config.size for r in demo.runs if r.config.w_format == f} == set(
            lad.compressed_sizes)


def test_catalog_lists_seven_studies_with_costs():
    t = st.catalog_table()
    assert list(t["study"]) == ["int", "noise", "fp", "groups", "sparse", "vq", "lsq"]
    assert (t["accelerator_hours_paper"] > 100).all()
    assert (t["cpu_hours_2_cores"] > 0).all()


def synthetic_runs(name: str, rho: dict, noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A runs table of the study's CPU design (only the points whose key is in ``rho``) with
    losses from a known law."""
    s = st.study(name)
    spec = st.study_spec(name, "cpu")
    rng = np.random.default_rng(seed)
    rows = []
    for r in spec.runs:
        c = r.config
        point = {"w_format": c.w_format, "a_format": c.a_format, "grad": c.grad,
                 "sparse_grad": c.sparse_grad}
        dense = rep.is_dense(c.w_format) and rep.is_dense(c.a_format)
        key = s.key(point)
        if not dense and key not in rho:
            continue
        eff = 1.0 if dense else rho[key]
        loss = E + A * (r.n_params * eff) ** -ALPHA + B * r.tokens ** -BETA
        rows.append({"N": r.n_params, "D": r.tokens, "loss": loss + rng.normal(0, noise),
                     **point, "seed": c.seed})
    return pd.DataFrame(rows)


def test_int_analysis_recovers_capacities_and_judges_composability():
    rho = {"int2:had/none": 0.55, "none/int2:had": 0.5, "int2:had/int2:had": 0.275,
           "int4:had/none": 0.9, "none/int4:had": 0.85, "int4:had/int4:had": 0.6}
    res = st.analyse("int", synthetic_runs("int", rho, noise=0.002, seed=0), n_bootstrap=60)
    got = res.capacity.set_index("format")
    for k, v in rho.items():
        assert got.loc[k, "rho"] == pytest.approx(v, abs=0.03)
        assert got.loc[k, "identified"]
    checks = res.checks.set_index("claim")
    assert checks.loc["INT2: ρ(W,A) = ρ(W)·ρ(A)", "verdict"] == "supported"  # 0.275 = 0.55·0.5
    assert checks.loc["INT4: ρ(W,A) = ρ(W)·ρ(A)", "verdict"] == "contradicted"  # 0.6 < 0.765
    assert checks.loc["INT8: ρ(W,A) = ρ(W)·ρ(A)", "verdict"] == "not run"
    assert "supported" in res.verdict() and "not run" in res.verdict()
    # the composition figure's table: ρ of the whole beside the product of its parts
    comp = res.composition.set_index("whole")
    assert list(comp.index) == ["int2:had/int2:had", "int4:had/int4:had"]  # INT8 not run
    assert comp.loc["int2:had/int2:had", "product"] == pytest.approx(0.55 * 0.5, abs=0.02)
    assert comp.loc["int4:had/int4:had", "product"] == pytest.approx(0.9 * 0.85, abs=0.03)
    assert comp.loc["int4:had/int4:had", "rho"] == pytest.approx(0.6, abs=0.03)
    for _, c in comp.iterrows():
        assert c["product_lo"] < c["product"] < c["product_hi"] and c["identified"]
        ratio = res.checks.set_index("claim").loc[c["claim"]]
        assert c["rho"] / c["product"] == pytest.approx(ratio["ratio"], rel=1e-9)
    # a part not identified, or missing from the table, leaves the point not identified
    vague = res.capacity.assign(identified=res.capacity["format"] != "none/int2:had")
    comp = st.composition_table(res.fit, res.study.checks, vague).set_index("whole")
    assert not comp.loc["int2:had/int2:had", "identified"]
    assert comp.loc["int4:had/int4:had", "identified"]
    partial = res.capacity[res.capacity["format"] != "int4:had/none"]
    comp = st.composition_table(res.fit, res.study.checks, partial).set_index("whole")
    assert not comp.loc["int4:had/int4:had", "identified"]


def test_composition_plot_marks_identified_points_and_draws_others_as_intervals(tmp_path,
                                                                                  monkeypatch):
    from capscale.laws import plots

    figs = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or real(fig, path))
    table = pd.DataFrame([
        {"claim": "INT2", "whole": "a", "parts": "b · c", "rho": 0.30, "lo": 0.27, "hi": 0.33,
         "product": 0.28, "product_lo": 0.25, "product_hi": 0.31, "identified": True},
        {"claim": "INT8", "whole": "d", "parts": "e · f", "rho": 0.95, "lo": 0.80, "hi": 1.12,
         "product": 0.97, "product_lo": 0.85, "product_hi": 1.10, "identified": False}])
    path = plots.plot_composition(table, tmp_path / "comp.png")
    assert path.exists()
    ax = figs[0].axes[0]
    marked = [(x, y) for line in ax.lines if line.get_marker() == "o"
              for x, y in zip(line.get_xdata(), line.get_ydata())]
    assert marked == [(pytest.approx(0.28), pytest.approx(0.30))]
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    assert any(np.allclose(seg, [[0.97, 0.80], [0.97, 1.12]]) for seg in segments)
    assert any(np.allclose(seg, [[0.85, 0.95], [1.10, 0.95]]) for seg in segments)


def test_groups_analysis_judges_the_claims_of_the_scale_its_runs_are():
    """CPU runs (groups of 2-8) are judged on the CPU claims, without being told the scale:
    finer groups and kept outliers above coarser groups, each a ratio of joint draws."""
    rho = {"int2:absmax:g2/none": 0.8, "int2:absmax:g4/none": 0.7, "int2:absmax:g8/none": 0.6,
           "outliers0.05+int2:absmax:g8/none": 0.6, "int4:absmax:g8/none": 0.95}
    res = st.analyse("groups", synthetic_runs("groups", rho, noise=0.002, seed=3),
                     n_bootstrap=60)
    got = res.capacity.set_index("format")
    for k, v in rho.items():
        assert got.loc[k, "rho"] == pytest.approx(v, abs=0.03)
    checks = res.checks.set_index("claim")
    assert checks.loc["INT2: ρ(g2) > ρ(g8)", "verdict"] == "supported"
    assert checks.loc["INT2: ρ(g2) > ρ(g8)", "ratio"] == pytest.approx(0.8 / 0.6, rel=0.05)
    # 5% outliers with no gain: the ratio straddles 1 (or lies under it): not supported
    assert checks.loc["INT2 g8: ρ(5% outliers) > ρ(none kept)", "verdict"] in (
        "not resolved", "contradicted")
    assert "INT2: ρ(g8) > ρ(g128)" not in checks.index


def test_lsq_analysis_keys_on_the_gradient_rule_and_fits_a_curve_per_rule():
    rho = {"int2/int2/trust": 0.3, "int2/int2/lsq": 0.25, "int3/int3/trust": 0.55,
           "int3/int3/lsq": 0.42, "int4/int4/trust": 0.75, "int4/int4/lsq": 0.55,
           "int6/int6/trust": 0.93, "int6/int6/lsq": 0.66, "int8/int8/trust": 0.99,
           "int8/int8/lsq": 0.7}
    res = st.analyse("lsq", synthetic_runs("lsq", rho, noise=0.002, seed=4), n_bootstrap=60)
    got = res.capacity.set_index("format")
    for k, v in rho.items():
        assert got.loc[k, "rho"] == pytest.approx(v, abs=0.04)
    checks = res.checks.set_index("claim")
    assert checks.loc["8 bits: ρ(trust) > ρ(LSQ)", "verdict"] == "supported"
    assert set(res.curves) >= {"grad=lsq scalar", "grad=trust scalar"}
    # LSQ saturates well below 1 at low GMSE: its fitted L sits below trust's
    assert res.curves["grad=lsq scalar"]["L"] < res.curves["grad=trust scalar"]["L"]


def test_unidentified_capacities_are_reported_as_such():
    rho = {"int4/int4": 0.67, "noise0.01154/noise0.01154": 0.65}
    df = synthetic_runs("noise", rho, noise=0.3, seed=5)  # noise far above the signal
    res = st.analyse("noise", df, n_bootstrap=40)
    assert not res.capacity["identified"].all()
    verdicts = set(res.checks["verdict"])
    assert verdicts <= {"not identified", "not run", "supported"}
    assert "not run" in verdicts


TINY = ladder.Ladder(
    scale="cpu", dense_sizes=("t1", "t2"), dense_lengths=({"steps": 2}, {"steps": 3}),
    compressed_sizes=("t2",), compressed_length={"steps": 2},
    train={"tokenizer": "train:spm:512", "seq_len": 32, "batch_tokens": 256,
           "val_tokens": 2048, "eval_every": 1000000},
    sizes={"t1": {"n_layer": 1, "n_embd": 16, "n_head": 1},
           "t2": {"n_layer": 1, "n_embd": 32, "n_head": 1}})


def test_a_study_started_again_reruns_nothing_finished(tmp_path, monkeypatch):
    monkeypatch.setitem(ladder.LADDERS, "cpu", TINY)
    tiny = catalog.Study("tiny", "—", "tiny", "none", ({"w_format": "int4", "a_format": "int4"},),
                         cpu_seeds=1)
    monkeypatch.setitem(catalog.studies(), "tiny", tiny)
    out = tmp_path / "tiny"
    first = st.run_study("tiny", out, jobs=2, threads=1, quiet=True)
    assert first.ok and set(first.launched.values()) == {"finished"}
    assert len(first.launched) == 5
    done = sorted(out.glob("*/result.json"))
    stamps = {p: p.stat().st_mtime_ns for p in done}
    # kill one run's result as if the study had died before it finished: only it runs again
    victim = done[0]
    victim.unlink()
    second = st.run_study("tiny", out, jobs=2, threads=1, quiet=True)
    assert list(second.launched) == [victim.parent.name]
    for p in done[1:]:
        assert p.stat().st_mtime_ns == stamps[p]
    third = st.run_study("tiny", out, quiet=True)
    assert third.launched == {}
    info = json.loads((out / "study.json").read_text())
    assert info["study"] == "tiny" and len(info["launches"]) == 3
    # another study into the same folder is refused
    with pytest.raises(Exception, match="holds study 'tiny'"):
        st.run_study("int", out, quiet=True)


def test_cli_study_list_and_errors(capsys):
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    for name in st.studies():
        assert f"\n{name} " in out
    assert main(["study", "run", "nosuch"]) == 2
    assert "unknown study 'nosuch'" in capsys.readouterr().err
    assert main(["study", "report", "/nonexistent/folder"]) == 2
    assert math.isfinite(1.0)


def test_design_check_simulates_each_rho_before_training(capsys):
    from capscale.demo import demo_spec_path
    from capscale.studies.design import describe, simulate
    from capscale.sweep import load_spec, spec_from_dict

    table = simulate(load_spec(demo_spec_path()), n_sims=60)
    got = table.set_index("format")
    assert set(got.index) == {"int8/int8", "int4/int4", "int2/int2"}
    assert got.loc["int2/int2", "rho_prior"] == pytest.approx(rep_rho("int2", "int2"))
    assert got.loc["int2/int2", "identified"]  # far from 1: pinned down by 9 runs
    assert (got["width"] > 0).all()
    text = describe(table)
    assert "int2/int2" in text and "prior: the CPU ladder's dense fit" in text
    # a sweep without dense runs cannot measure ρ, and says so before training
    d = ladder.spec_dict("x", st.scale_ladder("cpu"), [{"w_format": "int4", "a_format": "int4"}])
    d["runs"] = [r for r in d["runs"] if r["w_format"] != "none"]
    assert "NOT identified" in describe(simulate(spec_from_dict(d)))


def rep_rho(w, a):
    from capscale.laws.measure import rho_gmse

    return rho_gmse(w, a)


def test_a_curve_with_as_many_gmse_levels_as_parameters_is_not_identified():
    """Three GMSE levels for L, F and C: the curve passes through them whatever they are, so
    it is no result however narrow its bootstrap."""
    rho = {"int2/int2/trust": 0.3, "int2/int2/lsq": 0.25, "int4/int4/trust": 0.75,
           "int4/int4/lsq": 0.55, "int8/int8/trust": 0.99, "int8/int8/lsq": 0.7}
    res = st.analyse("lsq", synthetic_runs("lsq", rho, noise=0.002, seed=4), n_bootstrap=20)
    for name in ("grad=lsq scalar", "grad=trust scalar"):
        assert isinstance(res.curves[name], str)
        assert res.curves[name].startswith("not identified: 3 GMSE levels for 3 curve parameters")


@pytest.mark.parametrize("name", list(st.studies()))
def test_every_study_design_identifies_its_capacities_at_cpu_scale(name):
    """The design is fixed before compute: with the CPU ladder's measured scatter, the design
    check gives every ρ of every study an interval narrower than the identification width
    (each study's seeds were chosen for it, ``Study.cpu_seeds``)."""
    from capscale.laws.identify import IDENTIFIED_WIDTH
    from capscale.studies.design import simulate

    t = simulate(st.study_spec(name, "cpu"), n_sims=100)
    assert len(t) > 0
    assert (t["width"] < IDENTIFIED_WIDTH).all(), t[["format", "width"]].to_string()
    assert t["identified"].all()


def test_a_study_describes_its_ladder_with_its_own_seeds():
    for name in ("fp", "noise"):
        s = st.study(name)
        text = st.study_ladder(s, "cpu").describe()
        assert text.endswith(f"; {s.cpu_seeds} seeds at the compressed budget")
    assert st.study_ladder(st.study("fp"), "paper").describe().endswith(
        "; 1 seed at the compressed budget")


def test_the_design_check_assumes_the_seed_noise_of_the_scale():
    """The CPU ladder's measured scatter (0.028 nats) on CPU models; on paper-scale models the
    QuEST runs' robust scatter around their unified fit (0.0143), not the CPU ladder's, which
    called every paper-scale ρ not identified at 3-9 times the runs; a given noise is kept."""
    from capscale.studies.design import SEED_NOISE, simulate

    cpu = simulate(st.study_spec("noise", "cpu"), n_sims=10)
    assert cpu.attrs["noise"] == SEED_NOISE and "CPU ladder" in cpu.attrs["noise_source"]
    paper = simulate(st.study_spec("noise", "paper"), n_sims=20)
    assert paper.attrs["noise"] == pytest.approx(0.0143, abs=5e-4)
    assert "QuEST" in paper.attrs["noise_source"]
    given = simulate(st.study_spec("noise", "cpu"), noise=0.01, n_sims=10)
    assert given.attrs["noise"] == 0.01 and given.attrs["noise_source"] == "given"
