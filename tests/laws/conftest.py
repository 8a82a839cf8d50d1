"""Shared helpers: synthetic runs tables drawn from known parameters."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import capscale.cli as cli

TRUE = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.36, "E": 1.8}


def chinchilla_loss(N, D, eff=1.0, p=TRUE):
    return p["A"] * (N * eff) ** -p["alpha"] + p["B"] * D ** -p["beta"] + p["E"]


def grid(sizes=(2e7, 5e7, 1e8, 2e8, 5e8, 1e9), ratios=(10, 20, 40, 80)):
    return [(n, r * n) for n, r in itertools.product(sizes, ratios)]


def noisy(loss, sigma, rng):
    return np.asarray(loss) * np.exp(sigma * rng.standard_normal(np.shape(loss)))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def chinchilla_table(rng):
    rows = [{"N": n, "D": d} for n, d in grid()]
    df = pd.DataFrame(rows)
    df["loss"] = noisy(chinchilla_loss(df["N"], df["D"]), 0.003, rng)
    return df


@pytest.fixture
def only_laws_cli(monkeypatch):
    """The `capscale` entry point with the commands of this package part only (the others
    live in modules this test suite does not need)."""
    monkeypatch.setattr(cli, "COMMANDS", {k: k for k in ("fit", "predict", "compare")})
    return cli.main
