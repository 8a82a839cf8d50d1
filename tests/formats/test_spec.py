"""Spec strings: the examples of DESIGN.md parse and mean what it says; errors name the bad part."""

import pytest
import torch

from capscale.errors import CapscaleError
from capscale.formats import parse_format
from capscale.formats.block import MXQuantizer, NVFP4Quantizer
from capscale.formats.noise import NoiseInjection
from capscale.formats.scalar import FPQuantizer, IntQuantizer, LloydMaxQuantizer, NF4Quantizer
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers
from capscale.formats.vq import VectorQuantizer

DESIGN_EXAMPLES = [
    "int4", "int4:absmax:g128", "int4:had", "fp4", "e2m1", "e4m3", "e5m2", "e2m3", "e3m2",
    "nf4", "mxfp4", "mxfp6_e2m3", "mxfp8_e4m3", "nvfp4", "lloydmax3", "sparse0.5",
    "sparse0.5:row", "2:4", "outliers0.01", "vq2:b4", "vq4:b8", "noise0.0115", "sparse0.5+int4",
    "outliers0.01+int3:g32", "2:4:pairs+int4:had", "none",
]


@pytest.mark.parametrize("spec", DESIGN_EXAMPLES)
def test_round_trip(spec):
    f = parse_format(spec)
    assert parse_format(str(f)) == f
    assert str(parse_format(str(f))) == str(f)


def test_meanings():
    p = parse_format
    assert p("int4").parts == (IntQuantizer(n_bits=4),)
    assert p("int4").parts[0].scaling.rule == "rms"
    s = p("int4:absmax:g128").parts[0].scaling
    assert (s.rule, s.group) == ("absmax", 128)
    assert p("int4:had").rotation == 128 and p("int4:had64").rotation == 64
    assert p("fp4") == p("e2m1") and isinstance(p("e2m1").parts[0], FPQuantizer)
    assert p("fp8") == p("e4m3")
    assert isinstance(p("nf4").parts[0], NF4Quantizer)
    assert p("mxfp6") == p("mxfp6_e2m3") and isinstance(p("mxfp4").parts[0], MXQuantizer)
    assert isinstance(p("nvfp4").parts[0], NVFP4Quantizer)
    assert p("lloydmax3").parts == (LloydMaxQuantizer(n_bits=3),)
    assert p("sparse0.5").parts == (MagnitudeSparsity(0.5, per_row=False),)
    assert p("sparse0.5:row").parts == (MagnitudeSparsity(0.5, per_row=True),)
    assert p("2:4").parts == (NMSparsity(2, 4),) and p("2:4:pairs").parts == (NMSparsity(2, 4, True),)
    assert p("outliers0.01").parts == (Outliers(0.01),)
    assert p("vq4:b8").parts == (VectorQuantizer(4, 8),)
    assert p("noise0.0115").parts == (NoiseInjection(0.0115),)
    comp = p("sparse0.5+int4")
    assert isinstance(comp.parts[0], MagnitudeSparsity) and isinstance(comp.parts[1], IntQuantizer)
    assert p("none").is_identity and p("bf16") == p("none") and p("none").bits_per_value == 16
    assert p(" INT4 ") == p("int4")
    assert p("int4:row") == p("int4") and str(p("int4:rms:row")) == "int4"


def test_sparse_then_quantize_keeps_zeros_and_quantizes_kept_values():
    x = torch.randn(8, 256)
    y = parse_format("sparse0.5+int4").quantize(x)
    kept = y != 0
    assert kept.sum() == x.numel() // 2
    # the kept values are on the INT4 grid of the RMS of the kept values (per row)
    part = parse_format("int4").parts[0]
    for r in range(8):
        v = x[r][kept[r]]
        scale = part.alpha * v.square().mean().sqrt()
        steps = (y[r][kept[r]] / scale + 1) * 7.5
        assert torch.allclose(steps, steps.round(), atol=1e-4)


def test_outliers_are_kept_exactly_and_inliers_quantized():
    x = torch.randn(4, 1024)
    y = parse_format("outliers0.01+int3:g32").quantize(x)
    n_out = round(0.01 * x.numel())
    top = x.abs().flatten().topk(n_out).indices
    assert torch.equal(y.flatten()[top], x.flatten()[top])
    assert (y != x).sum() >= x.numel() - n_out - 50  # inliers moved (a few may land on a level)


@pytest.mark.parametrize(
    "bad,needle",
    [
        ("int4x", "unknown format 'int4x'"),
        ("int9", "INT bit widths go from 1 to 8"),
        ("int4:pairs", "unknown modifier 'pairs'"),
        ("int4:absmax:mse", "one scale rule"),
        ("int4:g0", "positive integer"),
        ("int4+sparse0.5", "must be the last part"),
        ("sparse0.5:had+int4", "put ':had' on the last part"),
        ("int4:had3", "power of two"),
        ("e0m3", "at least one exponent bit"),
        ("e4m5", "4 to 8 bits"),
        ("sparse1.5", "sparsity must be in [0, 1)"),
        ("5:4", "0 < N <= M"),
        ("vq3:b8", "vector dimensions"),
        ("vq4:b20", "bits per vector"),
        ("sparse0.5+vq4", "cannot follow"),
        ("none+int4", "cannot be combined"),
        ("int4+", "empty part"),
        ("int4::g32", "empty modifier"),
        ("", "non-empty"),
    ],
)
def test_errors_name_the_bad_part(bad, needle):
    with pytest.raises(CapscaleError) as e:
        parse_format(bad)
    assert needle in str(e.value)


def test_shape_errors_are_clear():
    with pytest.raises(CapscaleError, match="multiple of 128"):
        parse_format("int4:g128").quantize(torch.randn(3, 100))
    with pytest.raises(CapscaleError, match="multiple of 4"):
        parse_format("2:4").quantize(torch.randn(3, 10))


def test_hadamard_block_shrinks_to_fit_the_row():
    # rows of 96 are rotated in blocks of 32 (the largest power of two dividing 96)
    x = torch.randn(4, 96)
    y = parse_format("int4:had").quantize(x)
    assert y.shape == x.shape and ((y - x) ** 2).mean() < 0.05
