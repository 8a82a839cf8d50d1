"""The solved constants of the grids: α* read back from the cache is the solve's very number,
a damaged or unwritable cache costs a new solve and nothing else, and the Lloyd–Max grids are
fixed points of Lloyd's iteration to round-off."""

import json

import numpy as np
import pytest

from capscale.formats import gaussian
from capscale.formats.gaussian import (
    _grid_gmse_at_scales,
    _solve_optimal_scale,
    grid_gmse,
    optimal_scale,
)
from capscale.formats.grids import int_levels, lloyd_max_levels, normalised


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSCALE_CACHE", str(tmp_path))
    gaussian._optimal_scale_cached.cache_clear()
    yield tmp_path
    gaussian._optimal_scale_cached.cache_clear()


def test_the_scan_is_grid_gmse_at_each_scale():
    levels = normalised(lloyd_max_levels(8))
    scales = np.linspace(0.05, 8.0, 37)
    assert list(_grid_gmse_at_scales(levels, scales)) == [grid_gmse(levels, s) for s in scales]


def test_optimal_scale_is_cached_on_disk_exactly(fresh_cache):
    levels = int_levels(5)
    solved = _solve_optimal_scale(levels)
    assert optimal_scale(levels) == solved
    (path,) = (fresh_cache / "scales").glob("grid-*.json")
    assert json.loads(path.read_text())["scale"] == solved[0]
    gaussian._optimal_scale_cached.cache_clear()
    assert optimal_scale(levels) == solved  # read back: the same float


def test_a_damaged_or_foreign_cache_entry_is_solved_again(fresh_cache):
    levels = int_levels(3)
    solved = optimal_scale(levels)
    (path,) = (fresh_cache / "scales").glob("grid-*.json")
    for text in ("{", "[]", json.dumps({"version": 1, "levels": [0.0, 1.0], "scale": 9.0, "gmse": 1.0})):
        path.write_text(text)
        gaussian._optimal_scale_cached.cache_clear()
        assert optimal_scale(levels) == solved


def test_an_unwritable_cache_only_costs_the_solve(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("CAPSCALE_CACHE", str(blocker / "cache"))  # no folder can be made there
    gaussian._optimal_scale_cached.cache_clear()
    try:
        assert optimal_scale(int_levels(2)) == _solve_optimal_scale(int_levels(2))
    finally:
        gaussian._optimal_scale_cached.cache_clear()
    assert list(tmp_path.iterdir()) == [blocker]


@pytest.mark.parametrize("n", [2, 3, 16, 64, 256])
def test_lloyd_max_grids_are_fixed_points(n):
    q = lloyd_max_levels(n)
    edges = np.concatenate([[-np.inf], (q[1:] + q[:-1]) / 2, [np.inf]])
    m0, m1, _ = gaussian.gaussian_cell_moments(edges)
    # the centroid condition, to the round-off of the tail cells' moments
    assert np.max(np.abs(m1 / m0 - q)) < 1e-9
    assert np.all(np.diff(q) > 0) and np.array_equal(q, -q[::-1])
