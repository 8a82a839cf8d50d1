"""The float32 fast path of the scale-then-grid formats and NVFP4 against the float64
reference, bit for bit (signs of zeros included), on random, heavy-tailed, tiny, huge and
tie-point tensors in float32, bf16 and fp16; and the places that must take it."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from capscale.formats import fastpath, parse_format
from capscale.formats.fastpath import reference_arithmetic
from tests.formats.test_adversarial import GRID_CASES, _nvfp4_ties, adversarial_rows

FAST_SPECS = (
    "int2", "int3", "int4", "int8", "int4:zero", "int8:zero", "int3:zero:absmax:g32", "ternary",
    "ternary:absmax:tensor", "int4:absmax:g32", "int4:absmax:g128", "int8:absmax:tensor",
    "int4:tensor", "e2m1", "e2m1:absmax:g32", "e3m2", "e2m3:absmax:g16", "e4m3",
    "e4m3:absmax:tensor", "e5m2:absmax:tensor", "e3m0:absmax", "nf4", "nf4:g32", "nf4:rms",
    "lloydmax2", "lloydmax3", "lloydmax4:absmax:g64", "lloydmax8", "int4:mse:g32", "nvfp4",
)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@pytest.fixture(autouse=True)
def fast_path_on_small_tensors(monkeypatch):
    """The checks below use small tensors, which the fast path leaves to the reference by
    default (``MIN_FAST_NUMEL``): force it onto them."""
    monkeypatch.setattr(fastpath, "MIN_FAST_NUMEL", 0)


def test_small_tensors_take_the_reference_by_default(monkeypatch):
    monkeypatch.setattr(fastpath, "MIN_FAST_NUMEL", 1 << 16)
    assert not fastpath.takes(torch.zeros(1024, 32))
    assert fastpath.takes(torch.zeros(1024, 64))
    assert not fastpath.takes(torch.zeros(1024, 64, dtype=torch.float64))
    with reference_arithmetic():
        assert not fastpath.takes(torch.zeros(1024, 64))


def both(spec: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = parse_format(spec)
    fast = f.quantize(x)
    with reference_arithmetic():
        ref = f.quantize(x)
    return fast, ref


def assert_same(fast: torch.Tensor, ref: torch.Tensor, what) -> None:
    assert fast.dtype == ref.dtype and fast.shape == ref.shape, what
    same = (fast == ref) & (fast.signbit() == ref.signbit())
    same |= fast.isnan() & ref.isnan()
    bad = (~same).nonzero()
    assert bad.numel() == 0, (what, int((~same).sum()), bad[:3].tolist())


def random_tensors(dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    fmax = float(torch.finfo(dtype).max)
    base = torch.randn(48, 256, generator=g, dtype=torch.float64)
    t = torch.distributions.StudentT(2.0).sample((48, 256)).double()
    sparse = base * (torch.rand(48, 256, generator=g, dtype=torch.float64) < 0.3)
    rows = [
        base, t, sparse, base * 1e-30, base * 1e-39, base * 1e25, base * fmax / 8,
        torch.round(base * 4) / 4,  # many values on a coarse lattice: ties of uniform grids
        torch.where(torch.rand(48, 256, generator=g) < 0.5, base, -base.abs() * 0.0),
    ]
    out = [r.clamp(-fmax, fmax).to(dtype) for r in rows]
    const = torch.full((4, 256), 0.75, dtype=dtype)
    one = torch.zeros(4, 256, dtype=dtype)
    one[:, 3] = 2.5
    return [*out, const, one]


@pytest.mark.parametrize("spec", FAST_SPECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_path_equals_reference_on_random_tensors(spec, dtype):
    for i, x in enumerate(random_tensors(dtype)):
        fast, ref = both(spec, x)
        assert_same(fast, ref, (spec, dtype, i))
        assert torch.isfinite(fast).all(), (spec, dtype, i)


@pytest.mark.parametrize("direct", [False, True], ids=["tables", "direct"])
@pytest.mark.parametrize("spec", ["int4", "int8:zero:absmax:g32", "ternary", "e2m1:absmax:g16", "e4m3:absmax:tensor",
                                  "e5m2", "nvfp4", "int3:absmax:g32"])
def test_both_output_modes_equal_the_reference(spec, direct, monkeypatch):
    """Outputs from per-group tables and from the value formula applied to each decided level
    (the default for groups of up to 32) are the same bits."""
    monkeypatch.setattr(fastpath, "DIRECT", direct)
    for dtype in DTYPES:
        for i, x in enumerate(random_tensors(dtype, seed=3)):
            assert_same(*both(spec, x), (spec, dtype, i))


@pytest.mark.parametrize("case", GRID_CASES, ids=[c[0] for c in GRID_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fast_path_equals_reference_at_ties(case, dtype):
    """The oracle suite's adversarial rows (grid midpoints ±1 ulp, amax just below a power of
    two, FLT_MAX, denormals, signed zeros), finite rows only: what the fast path sees."""
    spec, n, _, _, ties, _ = case
    rows = [r for r in adversarial_rows(n, ties) if all(abs(v) < float("inf") for v in r)]
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    x = torch.where(torch.isfinite(x), x, torch.zeros((), dtype=dtype))  # fp16 overflows
    if ":tensor" in spec:
        for i in range(x.shape[0]):
            assert_same(*both(spec, x[i : i + 1]), (spec, dtype, i))
    else:
        assert_same(*both(spec, x), (spec, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nvfp4_fast_path_at_ties(dtype):
    rows = [r for r in adversarial_rows(32, _nvfp4_ties) if all(abs(v) < float("inf") for v in r)]
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    x = torch.where(torch.isfinite(x), x, torch.zeros((), dtype=dtype))
    for i in range(x.shape[0]):
        assert_same(*both("nvfp4", x[i : i + 1]), (dtype, i))
    assert_same(*both("nvfp4", x), dtype)


def test_ties_go_to_the_reference():
    """Values exactly on a decision boundary (and ±1 ulp) are decided by the float64 path: a
    tensor made of them matches the reference, and the fast path did flag them."""
    x = torch.tensor([[7.0] + [(k + 0.5) / 15 * 7.0 for k in range(-15, 15)] + [0.0]])
    x = torch.cat([x, torch.nextafter(x, torch.full_like(x, 9.0)), torch.nextafter(x, -torch.full_like(x, 9.0))])
    for spec in ("int4:zero:absmax", "int4:absmax", "e2m1:absmax", "nf4:g32"):
        assert_same(*both(spec, x), spec)
    calls = []
    real = fastpath._Kernel.block

    def spy(self, rows, cols, offset):
        real(self, rows, cols, offset)
        calls.append(sum(int(p.numel()) for p in self.flagged))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath._Kernel, "block", spy)
        parse_format("int4:zero:absmax").quantize(x)
    assert calls and calls[-1] > 0


@pytest.mark.parametrize("spec", ["int4", "int8:zero:absmax:tensor", "e4m3:absmax:tensor", "nf4", "nvfp4", "lloydmax3:tensor"])
def test_fast_path_across_chunks_and_threads(spec):
    """Shapes whose groups straddle the CPU chunks (rows longer than a chunk, per-tensor
    scales over many chunks, a width that does not divide the chunk), on 1 and 2 threads."""
    g = torch.Generator().manual_seed(7)
    shapes = [(3, 65600), (37, 4096), (257, 128)]  # 65600 > 2 chunks, a multiple of 64
    threads = torch.get_num_threads()
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            for shape in shapes:
                x = torch.randn(*shape, generator=g)
                assert_same(*both(spec, x), (spec, shape, t))
    finally:
        torch.set_num_threads(threads)


def test_groups_out_of_float32_range_go_to_the_reference():
    """Scales whose float32 multiplier or outputs leave the normal range: the whole group is
    computed by the reference (denormal groups, groups near FLT_MAX, fp16 outputs below its
    normal range)."""
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(1))
    x[0] *= 1e-41
    x[1] = x[1] / x[1].abs().max() * 3.4e38
    x[2, :] = 0.0
    x[2, 5] = 1.4e-45
    for spec in ("int4:absmax", "int4", "e4m3:absmax", "e2m1", "nf4:absmax", "ternary:absmax", "nvfp4"):
        assert_same(*both(spec, x), spec)
    h = (torch.randn(4, 64, generator=torch.Generator().manual_seed(2)) * 1e-3).half()
    for spec in ("e4m3:absmax", "e5m2:absmax:tensor", "nvfp4", "int8:zero:absmax"):
        assert_same(*both(spec, h), spec)


def test_fast_path_is_taken_by_quantize_and_by_the_trainer():
    from capscale.model.compressed_linear import CompressedLinear

    calls = []
    real = fastpath.grid_quantize

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fastpath, "grid_quantize", spy)
        x = torch.randn(8, 64)
        for spec in ("int4", "nvfp4", "e4m3:absmax:tensor", "nf4"):
            parse_format(spec).quantize(x)
            parse_format(spec).quantize(x.bfloat16())
        assert len(calls) == 8
        calls.clear()
        layer = CompressedLinear(64, 32, weight_format="int4", activation_format="nvfp4")
        layer(torch.randn(4, 64, requires_grad=True)).sum().backward()
        assert len(calls) == 2
        calls.clear()
        with reference_arithmetic():
            parse_format("int4").quantize(x)
        assert not calls


def test_non_finite_inputs_take_the_reference():
    x = torch.randn(4, 64)
    x[1, 3] = float("nan")
    x[2, 5] = float("inf")
    for spec in ("int4", "int4:absmax:g32", "e2m1", "nf4", "nvfp4"):
        assert_same(*both(spec, x), spec)


def test_decision_margin_covers_float32_error():
    """The bound the margins rest on: |fl32(x·fl32(m/s)) − fl64(x·m/s)| ≤ 2^-22.99·|y| +
    2^-150, checked against exact rationals on random and extreme operands."""
    g = torch.Generator().manual_seed(11)
    xs = torch.cat([torch.randn(4000, generator=g), torch.randn(1000, generator=g) * 1e-38])
    for m, s in ((7.5, 0.731), (448.0, 3.1e-3), (1.0, 1e30), (127.0, 2.5e-35)):
        c32 = torch.tensor(m / s, dtype=torch.float64).float()
        y32 = (xs * c32).double()
        worst = 0.0
        for xv, yv in zip(xs.double().tolist(), y32.tolist()):
            exact = Fraction(xv) * Fraction(m) / Fraction(s)
            err = abs(Fraction(yv) - exact) - Fraction(2.0**-150)
            if err > 0:
                worst = max(worst, float(err / abs(exact)))
        assert worst <= 2.0**-22.99
