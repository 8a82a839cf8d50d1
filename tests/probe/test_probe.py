"""The probe on heavy-tailed synthetic tensors against theory, and on a run the test trains."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import integrate, stats

from capscale.cli import main
from capscale.formats import registry
from capscale.probe import probe, synthetic_tensors, tails

# The MSE-optimal clip of the 4-bit uniform grid on N(0, 1), in σ (DESIGN.md, published value
# behind GMSE 0.01154288): int4's outermost level sits at ALPHA4 · RMS of the row.
ALPHA4 = 2.5140
LEVELS = 16
GROUP = 128


def rms_grid_mse(pdf, alpha=ALPHA4, levels=LEVELS) -> float:
    """E(x - Q(x))² for a unit-variance density: uniform grid of `levels` levels without zero
    (QuEST's INT), outermost level at ±alpha, nearest level, saturating beyond it."""
    step = 2 * alpha / (levels - 1)
    q = -alpha + step * np.arange(levels)
    edges = np.concatenate([[-np.inf], (q[1:] + q[:-1]) / 2, [np.inf]])
    return sum(integrate.quad(lambda x, c=c: (x - c) ** 2 * pdf(x), a, b, limit=200)[0]
               for a, b, c in zip(edges[:-1], edges[1:], q))


def absmax_group_mse(abs_cdf, abs_pdf, levels=LEVELS, group=GROUP) -> float:
    """High-resolution (Bennett) estimate for absmax groups: with M the largest |x| of the
    group, the grid spans ±M in steps Δ = 2M/(levels - 1); M itself is a level, the other
    group - 1 values err by Δ²/12 on average. E[M²] from the law of the maximum."""
    dens = lambda m: m**2 * group * abs_cdf(m) ** (group - 1) * abs_pdf(m)  # noqa: E731
    em2 = integrate.quad(dens, 0, np.inf, limit=400)[0]
    return (group - 1) / group * em2 * (2 / (levels - 1)) ** 2 / 12


def test_heavy_tails_swap_rms_and_absmax_scaling_as_theory_says():
    """RMS-scaled int4 clips at 2.514 RMS, optimal for Gaussian data; heavier tails put mass
    beyond the clip, where the error grows as (|x| - clip)², while an absmax scale per group
    of 128 represents every value in range and only coarsens its own group. Theory (written
    here, from the densities alone) says: on Gaussian data int4 wins; on Laplace data and on
    Gaussian data with 0.1% outliers at ±20 the absmax grid wins."""
    b = 1 / math.sqrt(2)  # unit-variance Laplace
    theory = {
        ("gaussian", "int4"): rms_grid_mse(stats.norm.pdf),
        ("gaussian", "int4:absmax:g128"): absmax_group_mse(
            lambda m: 2 * stats.norm.cdf(m) - 1, lambda m: 2 * stats.norm.pdf(m)),
        ("laplace", "int4"): rms_grid_mse(lambda x: stats.laplace.pdf(x, scale=b)),
        ("laplace", "int4:absmax:g128"): absmax_group_mse(
            lambda m: 1 - math.exp(-m / b), lambda m: math.exp(-m / b) / b),
    }
    assert theory[("gaussian", "int4")] == pytest.approx(0.01154288, rel=1e-4)  # published
    assert theory[("gaussian", "int4")] < theory[("gaussian", "int4:absmax:g128")]
    assert theory[("laplace", "int4")] > theory[("laplace", "int4:absmax:g128")]
    # outliers: p = 1e-3 of the values at ±20, RMS σ = sqrt(1 + 400 p). RMS clipping loses at
    # least p (20 - ALPHA4 σ)² of the energy σ²; absmax loses at most, in the groups holding an
    # outlier (probability 1 - (1 - p)^128), E(|z| - Δ/2)² with Δ = 40/15 for their Gaussian
    # values (all rounded to the innermost level, at Δ/2), plus the Gaussian groups' error.
    p, sigma = 1e-3, math.sqrt(1 + 400e-3)
    clip_loss = p * (20 - ALPHA4 * sigma) ** 2 / sigma**2
    half = 20 / 15
    inner = 1 + half**2 - 2 * half * math.sqrt(2 / math.pi)
    hit = 1 - (1 - p) ** GROUP
    absmax_bound = (hit * inner + theory[("gaussian", "int4:absmax:g128")]) / sigma**2
    assert clip_loss > 2 * absmax_bound

    tensors = synthetic_tensors(["gaussian", "laplace", "gaussian_outliers"], shape=(256, 4096))
    res = probe(tensors, ["int4", "int4:absmax:g128"], gmse_rel_err=5e-3)
    got = res.tensors.set_index(["tensor", "format"])["rel_mse"]
    for key, value in theory.items():
        assert got[key] == pytest.approx(value, rel=0.1), key
    assert got[("gaussian", "int4")] < got[("gaussian", "int4:absmax:g128")]
    assert got[("laplace", "int4")] > got[("laplace", "int4:absmax:g128")]
    assert got[("gaussian_outliers", "int4")] >= clip_loss
    assert got[("gaussian_outliers", "int4:absmax:g128")] <= absmax_bound
    # the probe names the swap on Laplace data, and sees none on Gaussian data
    lap = probe(tensors[1:2], ["int4", "int4:absmax:g128"], gmse_rel_err=5e-3)
    assert len(lap.disagreements) == 1 and lap.disagreements[0].startswith("int4:absmax:g128 beats int4")
    assert probe(tensors[:1], ["int4", "int4:absmax:g128"], gmse_rel_err=5e-3).disagreements == []


def test_tails_against_scipy():
    x = synthetic_tensors(["student_t5"], shape=(64, 1024))[0].tensor
    kurt, peak = tails(x)
    v = x.double().numpy().ravel()
    assert kurt == pytest.approx(stats.kurtosis(v, fisher=False), rel=1e-9)
    assert peak == pytest.approx(np.abs(v).max() / np.sqrt(np.mean(v**2)), rel=1e-9)


PLUGIN = str(Path(__file__).parents[1] / "formats" / "user_formats.py")
TRAIN = ["--n-layer", "1", "--n-embd", "128", "--n-head", "1", "--seq-len", "64",
         "--batch-tokens", "512", "--val-tokens", "2048", "--eval-every", "1000000",
         "--data", "builtin:wiki", "--tokenizer", "train:spm:512", "--no-progress"]
FORMATS = ["int4", "nvfp4", "mxfp4", "nf4", "int4:absmax:g128", "myfp4"]


def test_probe_a_trained_run_weights_and_activations(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(registry.ENV_VAR, "")
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--steps", "10", "--out", str(run)]) == 0
    out = tmp_path / "probe"
    capsys.readouterr()
    assert main(["probe", str(run), "--formats", *FORMATS, "--data", "builtin:wiki",
                 "--batches", "2", "--batch-size", "4", "--rel-err", "1e-2", "-o", str(out),
                 "--plugin", PLUGIN]) == 0
    printed = capsys.readouterr().out
    assert "rank_real" in printed and "relative MSE per layer type" in printed
    png = out / "probe.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    df = pd.read_csv(out / "tensors.csv")
    linears = ["attn.qkv", "attn.proj", "mlp.gate", "mlp.up", "mlp.down"]
    assert sorted(df.loc[df["kind"] == "weight", "layer_type"].unique()) == sorted(
        f"{n}.weight" for n in linears)
    assert sorted(df.loc[df["kind"] == "activation", "layer_type"].unique()) == sorted(
        f"{n}:input" for n in linears)
    assert set(df["format"]) == set(FORMATS) and df["rel_mse"].between(0, 1).all()
    # one weight, measured again here from the checkpoint file
    from safetensors.torch import load_file

    from capscale.formats import parse_format

    ckpt = next((run / "checkpoints").glob("step_*"))
    w = load_file(str(ckpt / "model.safetensors"))["layers.0.mlp.down.weight"]
    row = df[(df["tensor"] == "layers.0.mlp.down.weight") & (df["format"] == "int4")].iloc[0]
    err = (parse_format("int4").quantize(w).double() - w.double()).square().sum()
    assert row["rel_mse"] == pytest.approx(float(err / w.double().square().sum()), rel=1e-9)
    assert row["eff_bits"] == pytest.approx(-math.log(row["rel_mse"]) / math.log(4), rel=1e-12)
    assert row["kurtosis"] == pytest.approx(stats.kurtosis(w.double().numpy().ravel(), fisher=False))
    # activations: [tokens, in] with 2 batches of 4 sequences of 64 tokens
    act = df[(df["kind"] == "activation") & (df["format"] == "int4")]
    from capscale.model import LlamaConfig

    hidden = LlamaConfig(1, 128, 1).mlp_hidden
    assert (act["rows"] == 2 * 4 * 64).all() and set(act["cols"]) == {128, hidden}
    summary = json.loads((out / "summary.json").read_text())
    ranks = sorted(r["rank_real"] for r in summary["summary"])
    assert ranks[0] == 1 and len(ranks) == len(FORMATS)
    assert isinstance(summary["disagreements"], list)
    # a bad source or format is a user error
    assert main(["probe", str(tmp_path / "nothing"), "-o", str(out)]) == 2
    assert main(["probe", str(run), "--formats", "int4:bogus", "-o", str(out)]) == 2
    torch.manual_seed(0)
