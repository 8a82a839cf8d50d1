"""Exact GMSE of the block formats (integration over the block maximum), against published
values, a brute-force double integral, and Monte Carlo; and the Monte Carlo standard error's
coverage."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from capscale.capacity import gmse
from capscale.capacity.block_gmse import nvfp4_gmse_at_tensor_amax
from capscale.capacity.probe import rows_independent
from capscale.formats import parse_format

BLOCK_SPECS = ("mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2", "mxint8", "nvfp4",
               "nf4", "nf4:g32", "int4:absmax:g128", "int3:absmax:g32", "int8:zero:absmax:g64",
               "e2m1:absmax:g32", "e4m3:absmax:row", "ternary:absmax:g16", "lloydmax3:absmax:g32")


def test_mxfp4_published_value():
    r = gmse("mxfp4")
    assert r.method == "exact" and r.stderr == 0
    assert r.gmse == pytest.approx(0.0132188, rel=3e-5)


def test_nvfp4_published_value():
    # 0.0090463 is NVFP4's GMSE at a tensor scale set by a tensor maximum of 4.5; at the probe's
    # 512 × 4096 the tensor maximum is random (about 5.3) and the GMSE 0.0090450
    assert nvfp4_gmse_at_tensor_amax(4.5) == pytest.approx(0.0090463, rel=3e-5)
    r = gmse("nvfp4")
    assert r.method == "exact"
    assert r.gmse == pytest.approx(0.0090450, rel=3e-5)


@pytest.mark.parametrize("spec", BLOCK_SPECS)
def test_block_formats_are_exact(spec):
    assert gmse(spec, shape=(64, 512)).method == "exact"


def test_two_value_blocks_against_a_double_integral():
    """int2 (levels ±1/3, ±1 of the absmax) on blocks of 2, by a double integral over the pair
    (x1 the larger in magnitude, both positive by symmetry): x1 is exact, x2 rounds to x1/3
    below 2·x1/3 and to x1 above."""
    f = lambda x2, x1, c: (c * x1 - x2) ** 2 * norm.pdf(x1) * norm.pdf(x2)  # noqa: E731
    low, _ = integrate.dblquad(lambda x2, x1: f(x2, x1, 1 / 3), 0, 9, 0, lambda x1: 2 * x1 / 3,
                               epsabs=1e-13, epsrel=1e-11)
    high, _ = integrate.dblquad(lambda x2, x1: f(x2, x1, 1.0), 0, 9, lambda x1: 2 * x1 / 3, lambda x1: x1,
                                epsabs=1e-13, epsrel=1e-11)
    # 2 (which entry is larger) × 4 (signs) × the integral, per value (÷ 2)
    brute = 2 * 4 * (low + high) / 2
    assert gmse("int2:absmax:g2", shape=(1, 2)).gmse == pytest.approx(brute, rel=1e-9)


@pytest.mark.parametrize("spec", BLOCK_SPECS)
def test_block_exact_agrees_with_monte_carlo(spec):
    shape = (16, 512)
    exact = gmse(spec, shape=shape).gmse
    mc = gmse(spec, shape=shape, exact=False, rel_err=5e-3, seed=2)
    assert abs(mc.gmse - exact) < 3 * mc.stderr, (spec, exact, mc.gmse, mc.stderr)


def test_nvfp4_depends_on_the_tensor_size():
    # a single block: the tensor scale is the block's own, its E4M3 scale is exactly 448 and
    # s·g = amax/6: NVFP4 is then E2M1 at the block absmax, integrated by the other path
    one_block = gmse("nvfp4", shape=(1, 16)).gmse
    assert one_block == pytest.approx(gmse("e2m1:absmax:g16", shape=(1, 16)).gmse, rel=1e-10)
    assert one_block < gmse("nvfp4").gmse


@pytest.mark.parametrize("spec,shape,units", [("mxfp6_e3m2", (8, 256), "rows"), ("nvfp4", (4, 64), "tensors")])
def test_standard_error_covers(spec, shape, units):
    """Over many seeds about 95% of the ±2 s.e. intervals contain the exact value, and the
    standardized errors have unit spread."""
    assert rows_independent(parse_format(spec)) == (units == "rows")
    exact = gmse(spec, shape=shape).gmse
    z = []
    for seed in range(150):
        r = gmse(spec, shape=shape, exact=False, seed=seed, rel_err=1e-2, min_tensors=1)
        z.append((r.gmse - exact) / r.stderr)
    z = np.array(z)
    cover = float(np.mean(np.abs(z) < 2))
    assert 0.91 <= cover <= 0.985, cover
    assert 0.85 < float(np.std(z)) < 1.2
    assert abs(float(np.mean(z))) < 0.25


@pytest.mark.slow
@pytest.mark.parametrize("spec", BLOCK_SPECS[:10])
def test_block_exact_agrees_with_long_monte_carlo(spec):
    """At the probe's shape, to 2e-4 relative standard error: within 2 s.e."""
    exact = gmse(spec).gmse
    mc = gmse(spec, exact=False, rel_err=2e-4, seed=1)
    assert abs(mc.gmse - exact) < 2 * mc.stderr, (spec, exact, mc.gmse, mc.stderr)
    assert math.isfinite(exact)
