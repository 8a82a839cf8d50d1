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
    """0.0090463 is NVFP4's GMSE at the FP32 tensor scale a tensor maximum of 4.5σ sets; the
    probe's default is the expectation over 512 × 4096 tensors, each with its own maximum."""
    r = gmse("nvfp4", tensor_amax=4.5)
    assert r.method == "exact"
    assert r.gmse == pytest.approx(0.0090463, rel=3e-5)
    assert nvfp4_gmse_at_tensor_amax(4.5) == r.gmse
    r = gmse("nvfp4")
    assert r.method == "exact"
    assert r.gmse == pytest.approx(0.0090450, rel=3e-5)


def test_nvfp4_tensor_scale_convention():
    """With a static tensor scale (blocks unconstrained), doubling the tensor maximum doubles
    every E4M3 block scale exactly once no block saturates: the GMSE is periodic in
    log2(amax) there, within 0.0090437 and 0.0090591 over a period. At 4.5σ the blocks whose
    maximum exceeds 4.5 (one in 9,000) saturate their scale at 448 and add 4.6e-5 (relative).
    The GMSE at a shape averages it over that shape's tensor maximum (which bounds every
    block's): inside the same range, moving with the shape."""
    for a in (7.3, 9.0, 11.1):
        assert nvfp4_gmse_at_tensor_amax(2 * a) == pytest.approx(nvfp4_gmse_at_tensor_amax(a), rel=1e-12)
    period = [nvfp4_gmse_at_tensor_amax(8.0 * 2 ** (k / 32)) for k in range(32)]
    assert 0.0090435 < min(period) < 0.0090439 and 0.0090589 < max(period) < 0.0090593
    saturation = nvfp4_gmse_at_tensor_amax(4.5) / nvfp4_gmse_at_tensor_amax(9.0) - 1
    assert 3e-5 < saturation < 6e-5
    by_shape = {shape: gmse("nvfp4", shape=shape).gmse for shape in ((32, 4096), (512, 4096), (4096, 4096))}
    assert all(min(period) < v < max(period) for v in by_shape.values())
    assert by_shape[(32, 4096)] == pytest.approx(0.0090458, rel=3e-5)
    assert by_shape[(4096, 4096)] == pytest.approx(0.0090480, rel=3e-5)
    with pytest.raises(Exception, match="exact NVFP4"):
        gmse("nvfp4", tensor_amax=4.5, exact=False)


def _fp_values(exp: int, man: int, nan_top: bool) -> np.ndarray:
    """Non-negative values of ExMy from their bit fields (OCP E4M3: S.1111.111 is NaN)."""
    bias = 2 ** (exp - 1) - 1
    vals = []
    for e in range(2**exp):
        for m in range(2**man):
            if nan_top and e == 2**exp - 1 and m == 2**man - 1:
                continue
            vals.append(m / 2**man * 2.0 ** (1 - bias) if e == 0 else (1 + m / 2**man) * 2.0 ** (e - bias))
    return np.array(sorted(vals))


def _nearest(values: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Nearest of the sorted non-negative `values` to y >= 0, saturating (ties: measure zero)."""
    return values[np.searchsorted((values[1:] + values[:-1]) / 2, np.minimum(y, values[-1]))]


def test_nvfp4_fixed_scale_against_an_independent_monte_carlo():
    """Blocks of 16 N(0, 1) values quantized at the static tensor scale g = fl32(4.5/2688) by a
    NumPy NVFP4 written here from the bit fields (E4M3 block scale saturating at 448, E2M1
    elements saturating at 6), against the exact integral."""
    rng = np.random.default_rng(0)
    g = float(np.float32(4.5) / np.float32(2688.0))
    e4m3, e2m1 = _fp_values(4, 3, True), _fp_values(2, 1, False)
    errs = []
    for _ in range(8):
        x = rng.standard_normal((1 << 17, 16))
        amax = np.abs(x).max(axis=1, keepdims=True)
        sg = _nearest(e4m3, amax / (6 * g)) * g
        q = _nearest(e2m1, np.abs(x) / sg) * np.sign(x) * sg
        errs.append(((q - x) ** 2).mean(axis=1))
    e = np.concatenate(errs)
    mc, se = e.mean(), e.std(ddof=1) / math.sqrt(len(e))
    assert abs(mc - nvfp4_gmse_at_tensor_amax(4.5)) < 3 * se, (mc, se)
    assert se / mc < 2e-3


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
