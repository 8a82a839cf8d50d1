"""Formats checked against implementations that are not ours: torch's float8 casts, scipy's
Hadamard matrix, the NF4 quantile formula, the OCP MX and NVFP4 rules written out slowly."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.stats import norm

from capscale.formats import fwht, parse_format
from capscale.formats.grids import NF4_LEVELS, fp_levels, fp_spec
from capscale.formats.rounding import round_fp


def _values_in_range(maxv: float, n: int = 200_000) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    wide = torch.randn(n, generator=g) * maxv / 4
    tiny = torch.randn(n // 4, generator=g) * 2.0**-8  # subnormal territory
    grid = torch.tensor(fp_levels(fp_spec(4, 3)), dtype=torch.float32)
    ties = (grid[1:] + grid[:-1]) / 2  # exact midpoints: ties go to even
    return torch.cat([wide, tiny, ties]).clamp(-maxv, maxv)


def test_e4m3_rounding_matches_torch_float8():
    x = _values_in_range(448.0)
    ours = round_fp(x, fp_spec(4, 3))
    torch_ = x.to(torch.float8_e4m3fn).to(torch.float32)
    assert torch.equal(ours, torch_)


def test_e5m2_rounding_matches_torch_float8():
    x = torch.cat([_values_in_range(57344.0), torch.randn(10_000) * 1e-5])
    ours = round_fp(x, fp_spec(5, 2))
    assert torch.equal(ours, x.to(torch.float8_e5m2).to(torch.float32))


def test_saturation_not_inf():
    x = torch.tensor([1e6, -1e6, 500.0])
    assert torch.equal(round_fp(x, fp_spec(4, 3)), torch.tensor([448.0, -448.0, 448.0]))
    assert torch.equal(round_fp(x, fp_spec(5, 2)), torch.tensor([57344.0, -57344.0, 512.0]))
    assert round_fp(torch.tensor([100.0]), fp_spec(2, 1)).item() == 6.0


def test_fp_grids_of_the_specs():
    # OCP MX v1.0 element formats and OCP FP8: largest values and the E2M1 set
    assert sorted(set(np.abs(fp_levels(fp_spec(2, 1))))) == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert fp_spec(2, 3).max_value == 7.5
    assert fp_spec(3, 2).max_value == 28.0
    assert fp_spec(4, 3).max_value == 448.0
    assert fp_spec(5, 2).max_value == 57344.0
    assert len(fp_levels(fp_spec(2, 1))) == 15  # 16 codes, ±0 merged
    # E4M3: 256 codes − 2 NaN − (±0 merged) = 253 values
    assert len(fp_levels(fp_spec(4, 3))) == 253
    # ties to even in E2M1: 2.5 → 2, 0.25 → 0, 5 → 4
    assert round_fp(torch.tensor([2.5, 0.25, 5.0, 0.75]), fp_spec(2, 1)).tolist() == [2.0, 0.0, 4.0, 1.0]


def test_nf4_levels_from_normal_quantiles():
    # bitsandbytes' construction: 8 positive quantiles from [offset, 0.5), 7 negative ones,
    # and zero, normalised to [-1, 1]; offset = 0.9677083
    offset = 0.9677083
    pos = norm.ppf(np.linspace(offset, 0.5, 9)[:-1])
    neg = -norm.ppf(np.linspace(offset, 0.5, 8)[:-1])
    values = np.sort(np.concatenate([pos, [0.0], neg]))
    values /= np.abs(values).max()
    np.testing.assert_allclose(NF4_LEVELS, values, atol=1e-7)
    assert (NF4_LEVELS > 0).sum() == 8 and (NF4_LEVELS < 0).sum() == 7


def test_nf4_quantize_is_nearest_level_of_block_absmax():
    x = torch.randn(4, 128, dtype=torch.float64)
    q = parse_format("nf4").quantize(x)
    blocks = x.view(4, 2, 64)
    amax = blocks.abs().amax(-1, keepdim=True)
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float64)
    idx = ((blocks / amax).unsqueeze(-1) - levels).abs().argmin(-1)
    ref = (levels[idx] * amax).view(4, 128)
    assert torch.allclose(q, ref)


@pytest.mark.parametrize("block", [2, 16, 128])
def test_hadamard_matches_scipy_matrix(block):
    x = torch.randn(5, 3 * block, dtype=torch.float64)
    h = torch.tensor(scipy.linalg.hadamard(block), dtype=torch.float64) / math.sqrt(block)
    ref = (x.view(5, 3, block) @ h.T).view(5, 3 * block)
    assert torch.allclose(fwht(x, block), ref, atol=1e-12)
    assert torch.allclose(fwht(fwht(x, block), block), x, atol=1e-12)


def _mx_reference(x: torch.Tensor, elem_exp: int, elem_man: int, emax: int) -> torch.Tensor:
    """OCP MX v1.0, one block at a time, in Python floats: X = 2^(floor(log2 amax) − emax)."""
    out = torch.empty_like(x)
    spec = fp_spec(elem_exp, elem_man)
    rows, cols = x.shape
    for r in range(rows):
        for b in range(0, cols, 32):
            blk = x[r, b : b + 32]
            amax = float(blk.abs().max())
            if amax == 0:
                out[r, b : b + 32] = 0
                continue
            e = math.frexp(amax)[1] - 1  # exact floor(log2)
            scale = 2.0 ** (e - emax)
            elems = torch.clamp(blk / scale, -spec.max_value, spec.max_value)
            if (elem_exp, elem_man) == (4, 3):
                elems = elems.to(torch.float8_e4m3fn).to(x.dtype)  # an independent rounding
            else:
                grid = torch.tensor(fp_levels(spec), dtype=x.dtype)
                # nearest, ties to the level with an even mantissa (ties are measure-zero here)
                elems = grid[(elems.unsqueeze(-1) - grid).abs().argmin(-1)]
            out[r, b : b + 32] = elems * scale
    return out


@pytest.mark.parametrize("spec,exp,man,emax", [("mxfp4", 2, 1, 2), ("mxfp8_e4m3", 4, 3, 8), ("mxfp6_e3m2", 3, 2, 4)])
def test_mx_matches_slow_reference(spec, exp, man, emax):
    x = torch.randn(4, 128) * torch.logspace(-3, 3, 4).unsqueeze(1)
    x[0, :32] = 0.0  # an all-zero block
    x[1, 0] = 8.0 * x[1, :32].abs().max()  # a block whose maximum is a power of two times 8
    assert torch.equal(parse_format(spec).quantize(x), _mx_reference(x, exp, man, emax))


def test_mx_block_maximum_can_saturate():
    # amax just below 8: floor(log2) = 2, X = 1, and 7.99 saturates to 6 (OCP's floor rule)
    x = torch.zeros(1, 32)
    x[0, 0] = 7.99
    assert parse_format("mxfp4").quantize(x)[0, 0].item() == 6.0


def _nvfp4_reference(x: torch.Tensor) -> torch.Tensor:
    g = float(np.float32(float(x.abs().max()) / (6 * 448)))  # the tensor scale is stored in FP32
    out = torch.empty_like(x)
    e4m3, e2m1 = fp_spec(4, 3), fp_spec(2, 1)
    grid = torch.tensor(fp_levels(e2m1), dtype=x.dtype)
    for r in range(x.shape[0]):
        for b in range(0, x.shape[1], 16):
            blk = x[r, b : b + 16]
            s = float(torch.tensor(float(blk.abs().max()) / (6 * g)).to(torch.float8_e4m3fn).float())
            if s == 0:
                out[r, b : b + 16] = 0
                continue
            elems = torch.clamp(blk / (s * g), -6, 6)
            elems = grid[(elems.unsqueeze(-1) - grid).abs().argmin(-1)]
            out[r, b : b + 16] = elems * s * g
    assert e4m3.max_value == 448
    return out


def test_nvfp4_matches_slow_reference():
    x = torch.randn(3, 64, dtype=torch.float64) * torch.tensor([[0.01], [1.0], [30.0]], dtype=torch.float64)
    ours = parse_format("nvfp4").quantize(x)
    assert torch.allclose(ours, _nvfp4_reference(x), rtol=1e-12, atol=0)
