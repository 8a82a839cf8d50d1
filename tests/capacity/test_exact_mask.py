"""Exact GMSE of magnitude masks (sparsity, N:M, outliers), alone or before an RMS-scaled grid:
closed forms, an order-statistics integral written here, and Monte Carlo."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from capscale.capacity import gmse
from capscale.capacity.probe import _stream_seed
from capscale.formats import parse_format
from capscale.formats.gaussian import gaussian_interval_moments, optimal_scale

MASK_SPECS = ("sparse0.5", "2:4", "sparse0.5+int4", "2:4+int4", "2:4:pairs+int4:had", "outliers0.01+int3",
              "sparse0.5:row", "1:4", "2:4:pairs", "sparse0.7:row+int3", "outliers0.02:row+e2m1")


@pytest.mark.parametrize("spec", MASK_SPECS)
def test_mask_formats_are_exact(spec):
    r = gmse(spec, shape=(64, 4096))
    assert r.method == "exact" and r.stderr == 0 and math.isfinite(r.gmse)


def test_magnitude_sparsity_in_the_large_tensor_limit():
    """Pruning the smallest half of 2M values: the truncated normal's second moment below the
    median |x|, (2Φ(t) − 1) − 2tφ(t) with t = Φ⁻¹(3/4); the finite size moves it by ~1e-7."""
    t = norm.ppf(0.75)
    limit = (2 * norm.cdf(t) - 1) - 2 * t * norm.pdf(t)
    assert gmse("sparse0.5").gmse == pytest.approx(limit, rel=1e-5)


def _order_statistic_sum(n: int, j: int) -> float:
    """E[sum of the j smallest of n i.i.d. χ²₁], from the order statistics' densities (the
    i-th smallest of y = u² has density c·F^(i−1)(1 − F)^(n−i)·f, F(u) = 2Φ(u) − 1)."""
    total = 0.0
    for i in range(1, j + 1):
        c = math.comb(n, i) * i

        def f(u, i=i, c=c):
            return 2 * c * u * u * (2 * norm.cdf(u) - 1) ** (i - 1) * (2 * norm.sf(u)) ** (n - i) * norm.pdf(u)

        total += integrate.quad(f, 0, 12, limit=200, epsabs=1e-14, epsrel=1e-12)[0]
    return total


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (3, 8)])
def test_n_of_m_against_order_statistics(n, m):
    """N:M keeps the N largest of M: the error is the expected sum of the M − N smallest
    squares, per value."""
    expected = _order_statistic_sum(m, m - n) / m
    assert gmse(f"{n}:{m}", shape=(8, 64)).gmse == pytest.approx(expected, rel=1e-9)


def test_row_sparsity_at_a_finite_row_against_order_statistics():
    """Per row of 16, keeping the 4 largest: exact at the row length, not its limit."""
    expected = _order_statistic_sum(16, 12) / 16
    assert gmse("sparse0.75:row", shape=(8, 16)).gmse == pytest.approx(expected, rel=1e-9)


def test_pairs_closed_form():
    """2:4 on pairs: a pair's squared norm is exponential with mean 2; pruning the two smallest
    of four costs E[S(1) + S(2)] = 2/4 + (2/4 + 2/3) per 8 values: 5/24."""
    assert gmse("2:4:pairs", shape=(4, 64)).gmse == pytest.approx(5 / 24, rel=1e-10)


def test_outliers_then_grid_in_the_limit():
    """Per-tensor outliers at 1% of 2M values: the inliers are N(0, 1) truncated to |x| < t,
    t = Φ⁻¹(0.995); the grid sits at α*·(their RMS)."""
    t = norm.ppf(0.995)
    m0, _, m2 = gaussian_interval_moments(np.array(-t), np.array(t))
    q = parse_format("int3").parts[0]
    values = np.sort(q.levels) * optimal_scale(q.levels)[0] * math.sqrt(m2 / m0)
    edges = np.concatenate([[-t], (values[1:] + values[:-1]) / 2, [t]])
    a, b = np.maximum(edges[:-1], -t), np.minimum(edges[1:], t)
    c0, c1, c2 = gaussian_interval_moments(a, b)
    expected = float(np.sum(c2 - 2 * values * c1 + values**2 * c0))
    assert gmse("outliers0.01+int3").gmse == pytest.approx(expected, rel=2e-6)


def test_rotation_does_not_change_the_gmse():
    assert gmse("2:4:pairs+int4:had").gmse == gmse("2:4:pairs+int4").gmse


def test_short_rows_fall_back_to_monte_carlo():
    """The grid's RMS is only taken at its long-row limit from 1024 entries per scale on."""
    assert gmse("2:4+int4", shape=(16, 512), rel_err=2e-2).method == "monte-carlo"
    assert gmse("2:4+int4", shape=(16, 2048)).method == "exact"


@pytest.mark.parametrize("spec", MASK_SPECS[:6])
def test_mask_exact_agrees_with_monte_carlo(spec):
    shape = (32, 4096)
    exact = gmse(spec, shape=shape).gmse
    mc = gmse(spec, shape=shape, exact=False, rel_err=2e-3, seed=3)
    assert abs(mc.gmse - exact) < 2 * mc.stderr, (spec, exact, mc.gmse, mc.stderr)


@pytest.mark.slow
@pytest.mark.parametrize("spec", MASK_SPECS[:6])
def test_mask_exact_agrees_with_long_monte_carlo(spec):
    """At the probe's shape, to 2e-4 relative standard error: within 2 s.e. (the grid's
    long-row limit included)."""
    exact = gmse(spec).gmse
    mc = gmse(spec, exact=False, rel_err=2e-4, seed=1, max_values=1 << 30)
    assert abs(mc.gmse - exact) < 2 * mc.stderr, (spec, exact, mc.gmse, mc.stderr)


def test_the_probe_does_not_draw_the_code_books_training_data():
    """The VQ code books are trained on `manual_seed(0)`'s first 2^19 vectors, where their
    error is ~1% below that on new data; the probe's stream is a different one at every seed."""
    assert all(_stream_seed(s) not in (0, 1, 2, 3) for s in range(4))
    a = gmse("vq4:b8", shape=(64, 4096), seed=0)
    b = gmse("vq4:b8", shape=(64, 4096), seed=1)
    assert abs(a.gmse - b.gmse) < 3 * math.hypot(a.stderr, b.stderr)
    assert a.gmse == pytest.approx(0.0969, rel=2e-3)


def test_mse_clip_search_uses_its_fixed_clip_controls():
    """int4:mse:g128 adds the int4 grid at fixed clips of the group absmax (exact) as control
    variates: far fewer values for the same standard error than the plain ‖x‖² control."""
    r = gmse("int4:mse:g128", shape=(64, 4096), rel_err=2e-3)
    assert r.method == "monte-carlo" and r.stderr <= 2e-3 * r.gmse
    assert r.n_samples <= 512 * 4096
