"""Adversarial inputs per format family against an independent oracle written here.

The oracle works from the specifications' definitions in exact rational arithmetic
(`fractions.Fraction`): every code value of an ExMy format is built from its bit fields, the
quotient by the scale is exact, rounding picks the nearest value with the spec's tie rule, and
the result is rounded once to the output dtype (saturating at its largest finite value).
Inputs: NaN, ±inf, ±0, denormals, FLT_MAX, tie points ±1 ulp, a block maximum just below a
power of two, empty tensors, and float32/float64/bf16/fp16 inputs. Zero mismatches allowed,
signs of zeros included.

Non-finite policy under test: NaN and ±inf pass through per element for the scalar grids
(their scales are taken over the finite entries); MX and NVFP4 make the whole block NaN (the
OCP MX NaN scale); VQ makes the whole vector NaN.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from capscale.formats import parse_format
from capscale.formats.grids import NF4_LEVELS

NAN, INF = float("nan"), float("inf")
F32_MAX = float(np.finfo(np.float32).max)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


# --- the oracle: formats from their definitions -------------------------------------------

def fp_code_values(exp: int, man: int, kind: str) -> list[tuple[Fraction, int]]:
    """(value, mantissa field) of every non-negative finite code of ExMy, from its bits.
    kind: "all" (every code finite), "fn" (OCP E4M3: S.1111.111 is NaN), "ieee" (top exponent
    reserved)."""
    bias = 2 ** (exp - 1) - 1
    out = []
    for e in range(2**exp):
        for m in range(2**man):
            if kind == "ieee" and e == 2**exp - 1:
                continue
            if kind == "fn" and e == 2**exp - 1 and m == 2**man - 1:
                continue
            if e == 0:
                v = Fraction(m, 2**man) * Fraction(2) ** (1 - bias)
            else:
                v = (1 + Fraction(m, 2**man)) * Fraction(2) ** (e - bias)
            out.append((v, m))
    return sorted(out)


def round_fp_exact(v: Fraction, codes) -> Fraction:
    """Nearest code value to v, ties to the even mantissa field, saturating; sign kept by caller."""
    a = abs(v)
    top = codes[-1][0]
    if a >= top:
        return top if v >= 0 else -top
    lo = max((c for c in codes if c[0] <= a), key=lambda c: c[0])
    hi = min((c for c in codes if c[0] >= a), key=lambda c: c[0])
    if a - lo[0] < hi[0] - a:
        r = lo[0]
    elif a - lo[0] > hi[0] - a:
        r = hi[0]
    else:
        r = lo[0] if lo[1] % 2 == 0 else hi[0]
    return r if v >= 0 else -r


def nearest_level(v: Fraction, levels: list[Fraction], tie: str) -> Fraction:
    """Nearest of a sorted level list; tie "up" or "down" (to the larger / smaller level)."""
    best = None
    for lv in levels:
        d = abs(v - lv)
        if best is None or d < best[0] or (d == best[0] and tie == "up"):
            best = (d, lv)
    return best[1]


def to_out(value: Fraction, negative_zero: bool, dtype: torch.dtype) -> float:
    """The exact value rounded to float64 then to `dtype` (as torch casts), saturating."""
    if value == 0:
        return -0.0 if negative_zero else 0.0
    f = float(value)
    fmax = float(torch.finfo(dtype).max)
    t = torch.tensor(f, dtype=torch.float64).to(dtype)
    if math.isinf(float(t)):
        return math.copysign(fmax, f)
    return float(t)


def _frac(v: float) -> Fraction:
    return Fraction(v)


def oracle_grid(x: np.ndarray, group: int, dtype, level_of, scale_of, zero_sign="x") -> np.ndarray:
    """A scale-then-grid format: per group, scale s from the finite entries (scale_of), each
    finite value the level (level_of(x/s), in units of s) times s; non-finite pass through."""
    out = np.empty_like(x)
    for b in range(0, len(x), group):
        blk = x[b : b + group]
        fin = [v for v in blk if math.isfinite(v)]
        s = scale_of(fin)
        for i, v in enumerate(blk):
            if not math.isfinite(v):
                out[b + i] = v
                continue
            q = level_of(_frac(v) / s if s > 0 else _frac(v)) * s
            neg = (math.copysign(1, v) < 0) if zero_sign == "x" else zero_sign == "-"
            out[b + i] = to_out(q, neg, dtype)
    return out


def absmax_scale(fin):
    return Fraction(max((abs(v) for v in fin), default=0.0))


def rms_scale(alpha):
    def f(fin):
        if not fin:
            return Fraction(0)
        ss = math.fsum(v * v for v in fin)  # exact enough: the result is rounded as torch does
        return Fraction(math.sqrt(ss / len(fin)) * alpha)
    return f


def int_nozero_level(bits):
    h = 2**bits - 1
    levels = [Fraction(2 * k - h, h) for k in range(h + 1)]
    return lambda y: nearest_level(y, levels, "up")


def int_zero_level(bits):
    m = 2 ** (bits - 1) - 1

    def f(y):
        t = y * m
        k = round(t)  # Python rounds Fractions half to even
        return Fraction(max(-m, min(m, k)), m)
    return f


def fp_level(exp, man, kind):
    codes = fp_code_values(exp, man, kind)
    top = codes[-1][0]
    return lambda y: round_fp_exact(y * top, codes) / top


def nf4_level(y):
    return nearest_level(y, [Fraction(float(v)) for v in NF4_LEVELS], "down")


def oracle_mx(x, dtype, exp, man, kind, emax, int8=False):
    out = np.empty_like(x)
    codes = None if int8 else fp_code_values(exp, man, kind)
    for b in range(0, len(x), 32):
        blk = x[b : b + 32]
        if not all(math.isfinite(v) for v in blk):
            out[b : b + 32] = NAN
            continue
        amax = max(abs(v) for v in blk)
        if amax == 0:
            out[b : b + 32] = blk
            continue
        e = math.frexp(amax)[1] - 1
        X = Fraction(2) ** max(-127, min(127, e - emax))
        for i, v in enumerate(blk):
            y = _frac(v) / X
            if int8:
                el = Fraction(max(-127, min(127, round(y * 64))), 64)
            else:
                el = round_fp_exact(y, codes)
            out[b + i] = to_out(el * X, v < 0 or math.copysign(1, v) < 0, dtype)
    return out


def oracle_nvfp4(x, dtype):
    e4m3 = fp_code_values(4, 3, "fn")
    e2m1 = fp_code_values(2, 1, "all")
    out = np.empty_like(x)
    blocks = [x[b : b + 16] for b in range(0, len(x), 16)]
    bad = [not all(math.isfinite(v) for v in blk) for blk in blocks]
    amax_t = max((max(abs(v) for v in blk) for blk, bd in zip(blocks, bad) if not bd), default=0.0)
    if amax_t > 0:  # the FP32 tensor scale: one float32 division, kept >= 2^-149
        g = max(float(np.float32(amax_t) / np.float32(2688.0)), 2.0**-149)
        g = Fraction(g)
    for j, (blk, bd) in enumerate(zip(blocks, bad)):
        sl = slice(16 * j, 16 * j + 16)
        if bd:
            out[sl] = NAN
            continue
        if amax_t == 0:
            out[sl] = blk
            continue
        s = round_fp_exact(Fraction(max(abs(v) for v in blk)) / (6 * g), e4m3)
        for i, v in enumerate(blk):
            neg = math.copysign(1, v) < 0
            if s == 0:
                out[16 * j + i] = -0.0 if neg else 0.0
                continue
            y = _frac(v) / (s * g)
            y = max(Fraction(-6), min(Fraction(6), y))
            out[16 * j + i] = to_out(round_fp_exact(y, e2m1) * s * g, neg, dtype)
    return out


# --- adversarial inputs ---------------------------------------------------------------------

def _f32(v):
    return float(np.float32(v))


def _ulps(v):
    v = np.float32(v)
    return [float(np.nextafter(v, np.float32(-np.inf))), float(v), float(np.nextafter(v, np.float32(np.inf)))]


def adversarial_rows(n: int, tie_points, seed: int = 0) -> list[list[float]]:
    """Rows of n values: random, ties ±1 ulp (tie_points(amax) gives exact tie positions for a
    row whose first entry is amax), amax just below a power of two, specials."""
    rng = np.random.default_rng(seed)
    rows = []
    rows.append([_f32(v) for v in rng.standard_normal(n)])
    for amax in (_f32(np.nextafter(np.float32(4.0), np.float32(0))), 3.0, _f32(0.7070540189743042)):
        pts = []
        for t in tie_points(Fraction(amax)):
            pts.extend(_ulps(float(t)))
        pts = [p for p in pts if abs(p) <= amax]
        while pts:
            row = [amax] + pts[: n - 1]
            pts = pts[n - 1 :]
            row += [_f32(v) for v in rng.standard_normal(n - len(row)) * 0.01 * amax]
            rows.append(row)
    below_pow2 = [_f32(v) for v in rng.standard_normal(n)]
    below_pow2[1] = _f32(np.nextafter(np.float32(8.0), np.float32(0)))
    rows.append(below_pow2)
    special = [_f32(v) for v in rng.standard_normal(n)]
    rows.append([NAN] + special[1:])
    rows.append(special[:2] + [INF] + special[3:])
    rows.append(special[:3] + [-INF] + special[4:])
    rows.append([0.0, -0.0] * (n // 2))
    rows.append([1e-40, 0.0, -3e-41, -0.0] + [1.4e-45] * (n - 4))
    rows.append([F32_MAX, -F32_MAX] + [_f32(v) for v in rng.standard_normal(n - 2)])
    rows.append([F32_MAX] * n)
    rows.append([-0.0, -1e-30] + [_f32(v) for v in rng.standard_normal(n - 2)])
    return rows


def scaled_ties(levels: list[Fraction]):
    mids = [(a + b) / 2 for a, b in zip(levels[:-1], levels[1:])]
    return lambda amax: [m * amax for m in mids]


def _fp_norm_levels(exp, man, kind):
    codes = [c[0] for c in fp_code_values(exp, man, kind)]
    top = codes[-1]
    pos = [c / top for c in codes]
    return sorted({-p for p in pos} | set(pos))


def _mx_ties(exp, man, kind, emax):
    codes = [c[0] for c in fp_code_values(exp, man, kind)]
    mids = [(a + b) / 2 for a, b in zip(codes[:-1], codes[1:])]

    def f(amax):
        X = Fraction(2) ** (math.frexp(float(amax))[1] - 1 - emax)
        return [m * X for m in mids] + [-m * X for m in mids]
    return f


def _nvfp4_ties(amax):
    g = Fraction(float(np.float32(np.float32(float(amax)) / np.float32(2688.0))))
    e4m3 = fp_code_values(4, 3, "fn")
    s = round_fp_exact(amax / (6 * g), e4m3)
    mids = [Fraction(1, 4), Fraction(3, 4), Fraction(5, 4), Fraction(7, 4), Fraction(5, 2), Fraction(7, 2), Fraction(5)]
    return [m * s * g for m in mids] + [-m * s * g for m in mids]


def _run(spec: str, rows, dtype, oracle, ulps: int = 0) -> int:
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    got = parse_format(spec).quantize(x).double().numpy()
    mism = 0
    for r in range(x.shape[0]):
        xr = x[r].double().numpy()
        exp = oracle(xr, dtype)
        g = got[r]
        same = (g == exp) | (np.isnan(g) & np.isnan(exp))
        if ulps:
            with np.errstate(invalid="ignore"):
                same |= np.abs(g - exp) <= ulps * np.spacing(np.abs(exp))
        same &= (np.signbit(g) == np.signbit(exp)) | np.isnan(exp)
        mism += int((~same).sum())
        if (~same).any():
            i = int(np.argmax(~same))
            print(spec, dtype, "row", r, "index", i, "x", xr[i], "got", g[i], "expected", exp[i])
    return mism


# --- the cases --------------------------------------------------------------------------------

def _grid_cases():
    cases = []
    for bits in (2, 4, 8):
        h = 2**bits - 1
        lv = [Fraction(2 * k - h, h) for k in range(h + 1)]
        cases.append((f"int{bits}:absmax:g32", 32, int_nozero_level(bits), absmax_scale, scaled_ties(lv), "+"))
    for bits in (4, 8):
        m = 2 ** (bits - 1) - 1
        lv = [Fraction(k, m) for k in range(-m, m + 1)]
        cases.append((f"int{bits}:zero:absmax:tensor", 32, int_zero_level(bits), absmax_scale, scaled_ties(lv), "x"))
    cases.append(("ternary:absmax:g32", 32, int_zero_level(2), absmax_scale, scaled_ties([Fraction(-1), Fraction(0), Fraction(1)]), "x"))
    for e, m, kind in ((2, 1, "all"), (4, 3, "fn"), (5, 2, "ieee"), (3, 2, "all"), (2, 3, "all")):
        cases.append((f"e{e}m{m}:absmax:tensor", 32, fp_level(e, m, kind), absmax_scale,
                      scaled_ties(_fp_norm_levels(e, m, kind)), "x"))
        cases.append((f"e{e}m{m}:absmax:g32", 32, fp_level(e, m, kind), absmax_scale,
                      scaled_ties(_fp_norm_levels(e, m, kind)), "x"))
    nf4 = [Fraction(float(v)) for v in NF4_LEVELS]
    cases.append(("nf4", 64, nf4_level, absmax_scale, scaled_ties(nf4), "+"))
    cases.append(("nf4:g32", 32, nf4_level, absmax_scale, scaled_ties(nf4), "+"))
    return cases


GRID_CASES = _grid_cases()


@pytest.mark.parametrize("case", GRID_CASES, ids=[c[0] for c in GRID_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_absmax_grids_match_oracle(case, dtype):
    spec, n, level_of, scale_of, ties, zero_sign = case
    group = n if ":tensor" not in spec else None
    rows = adversarial_rows(n, ties)

    def oracle(xr, dt):
        return oracle_grid(xr, group or len(xr), dt, level_of, scale_of, zero_sign)

    # float64 outputs: x̂ = level · s takes one more float64 rounding than exact where the
    # level is not a dyadic number (level index times s, then divided by the level count), so
    # they are held to one ulp; every narrower output is rounded once from the exact value
    ulps = 1 if dtype == torch.float64 else 0
    if group is None:  # a per-tensor scale: one row at a time
        mism = sum(_run(spec, [row], dtype, oracle, ulps) for row in rows)
    else:
        mism = _run(spec, rows, dtype, oracle, ulps)
    assert mism == 0


MX_CASES = [
    ("mxfp4", 2, 1, "all", 2, False), ("mxfp6_e2m3", 2, 3, "all", 2, False),
    ("mxfp6_e3m2", 3, 2, "all", 4, False), ("mxfp8_e4m3", 4, 3, "fn", 8, False),
    ("mxfp8_e5m2", 5, 2, "ieee", 15, False), ("mxint8", 0, 0, "all", 0, True),
]


@pytest.mark.parametrize("case", MX_CASES, ids=[c[0] for c in MX_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_mx_matches_oracle(case, dtype):
    spec, e, m, kind, emax, int8 = case
    if int8:
        lv = [Fraction(k, 64) for k in range(-127, 128)]

        def ties(amax):
            X = Fraction(2) ** (math.frexp(float(amax))[1] - 1)
            return [(a + b) / 2 * X for a, b in zip(lv[:-1], lv[1:])]
    else:
        ties = _mx_ties(e, m, kind, emax)
    rows = adversarial_rows(32, ties)
    assert _run(spec, rows, dtype, lambda xr, dt: oracle_mx(xr, dt, e, m, kind, emax, int8)) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nvfp4_matches_oracle(dtype):
    rows = adversarial_rows(32, _nvfp4_ties)
    # NVFP4 has a tensor scale: each row on its own, and the whole set as one tensor
    mism = sum(_run("nvfp4", [row], dtype, oracle_nvfp4) for row in rows)
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    got = parse_format("nvfp4").quantize(x).double().numpy().reshape(-1)
    exp = oracle_nvfp4(x.double().numpy().reshape(-1), dtype)
    same = ((got == exp) & (np.signbit(got) == np.signbit(exp))) | (np.isnan(got) & np.isnan(exp))
    mism += int((~same).sum())
    assert mism == 0


def test_issue_examples():
    q = parse_format("mxfp4").quantize
    x = torch.zeros(1, 32)
    x[0, :4] = torch.tensor([NAN, 1.0, -2.0, 0.0])
    assert q(x).isnan().all()
    x = torch.zeros(1, 32)
    x[0, :3] = torch.tensor([INF, 1.15, -0.25])
    assert q(x).isnan().all()
    x = torch.randn(64, 4096, generator=torch.Generator().manual_seed(0))
    x[7, 100] = NAN
    y = parse_format("nvfp4").quantize(x)
    assert int(y.isnan().sum()) == 16 and y[7, 96:112].isnan().all()
    for spec in ("e4m3:absmax:tensor", "int4:absmax:g128", "int8:zero:absmax"):
        x = torch.zeros(128)
        x[:3] = torch.tensor([1e-40, 0.0, -3e-41])
        y = parse_format(spec).quantize(x)
        assert torch.isfinite(y).all(), spec
    y = parse_format("nf4").quantize(torch.tensor([1e-40, 0.0, -3e-41] + [0.0] * 61))
    assert y[1] == 0 and y[0] > 0 and y[2] < 0
    y = parse_format("e4m3:absmax:tensor").quantize(torch.tensor([4.658237934112549, -0.7070540189743042]))
    assert y[1].item() == pytest.approx(-72 * 4.658237934112549 / 448, rel=1e-6)
    x = torch.zeros(32, dtype=torch.bfloat16)
    x[0], x[16], x[17] = 4.5, 1.71875, -0.515625
    assert float(parse_format("nvfp4").quantize(x)[17]) == pytest.approx(-0.4414, abs=1e-3)


ALL_SPECS = ("int4", "int4:absmax:g32", "int4:zero", "ternary", "e2m1", "e4m3:absmax:tensor", "nf4",
             "lloydmax3", "lloydmax3:absmax:g32", "mxfp4", "mxint8", "nvfp4", "sparse0.5", "2:4",
             "2:4:pairs", "outliers0.01+int3", "sparse0.5+int4", "vq2:b4", "noise0.01", "int4:had",
             "mxfp4:had", "int4:mse:g32")


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("shape", [(0,), (0, 64), (3, 0), (2, 0, 64)], ids=str)
def test_empty_tensors(spec, shape):
    x = torch.zeros(shape)
    y = parse_format(spec).quantize(x)
    assert y.shape == x.shape and y.dtype == x.dtype


@pytest.mark.parametrize("spec", ALL_SPECS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_finite_in_finite_out_and_nan_propagates(spec, dtype):
    g = torch.Generator().manual_seed(3)
    # the largest finite value of the dtype (float64: 1e300, so that α·RMS stays finite)
    fmax = 1e300 if dtype == torch.float64 else float(torch.finfo(dtype).max)
    rows = [
        torch.randn(64, generator=g).tolist(),
        [fmax, -fmax] + torch.randn(62, generator=g).tolist(),
        [fmax] * 64,
        [1e-40, 0.0, -3e-41, -0.0] * 16,
        [0.0] * 64,
        (torch.randn(64, generator=g) * 1e-30).tolist(),
    ]
    x = torch.tensor(rows, dtype=torch.float64).to(dtype)
    y = parse_format(spec).quantize(x)
    assert torch.isfinite(y).all(), (spec, dtype)
    x[0, 5] = NAN
    y = parse_format(spec).quantize(x)
    assert y[0, 5].isnan(), spec
    nan_blocks = {"mxfp4": 32, "mxint8": 32, "mxfp4:had": 64, "nvfp4": 16, "vq2:b4": 2, "int4:had": 64}
    if spec == "noise0.01":
        assert torch.isfinite(y[1:]).all()
    elif spec in nan_blocks:  # NaN stays within its block (or its rotation block)
        assert int(y.isnan().sum()) <= nan_blocks[spec], spec
        assert torch.isfinite(y[1:]).all()
    else:  # per element
        assert int(y.isnan().sum()) == 1, spec


@pytest.mark.parametrize("spec", ["int4", "int4:absmax:g32", "e4m3:absmax:tensor", "nf4", "lloydmax3", "ternary", "noise0.01"])
def test_infinities_pass_through_per_element(spec):
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(4))
    ref = spec != "noise0.01"
    x[0, 3], x[1, 7] = INF, -INF
    y = parse_format(spec).quantize(x)
    assert y[0, 3] == INF and y[1, 7] == -INF
    if ref is not None:  # the other values see the scale of the finite entries only
        keep = torch.isfinite(x)
        finite_only = parse_format(spec).quantize(torch.where(keep, x, torch.zeros(())))
        if "absmax" in spec or spec == "nf4":  # a zero in place of ±inf changes no absmax
            assert torch.equal(y[keep], finite_only[keep])
        assert torch.isfinite(y[keep]).all()


def test_rms_scaled_grids_match_oracle():
    """RMS-scaled grids (the default scale), float32 and bf16, against the oracle with the
    scale α*·RMS over the finite entries of the row."""
    for spec, level_of, zero_sign in (("int4", int_nozero_level(4), "+"), ("int3:zero", int_zero_level(3), "x"),
                                      ("e2m1", fp_level(2, 1, "all"), "x"), ("e4m3", fp_level(4, 3, "fn"), "x")):
        alpha = parse_format(spec).parts[0].alpha
        rows = adversarial_rows(64, lambda a: [])
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            def oracle(xr, dt, level_of=level_of, zero_sign=zero_sign, alpha=alpha):
                return oracle_grid(xr, len(xr), dt, level_of, rms_scale(alpha), zero_sign)
            assert _run(spec, rows, dtype, oracle) == 0, (spec, dtype)


def test_negative_zero_kept_where_peers_keep_it():
    for spec in ("mxfp4", "nvfp4", "e4m3:absmax:tensor", "int8:zero:absmax"):
        x = torch.zeros(32)
        x[1] = -0.0
        x[2] = 1.0
        x[3] = -1e-6
        y = parse_format(spec).quantize(x)
        assert torch.signbit(y[1]) and torch.signbit(y[3]) and not torch.signbit(y[0]), spec
    y = parse_format("mxfp4").quantize(torch.full((32,), -0.0))
    assert torch.signbit(y).all()


GRAD_SPECS = ("int4", "int4:absmax:g32", "int8:zero", "ternary", "e2m1", "e4m3:absmax:tensor", "nf4",
              "lloydmax3", "int4:mse:g32", "mxfp4", "mxfp6_e3m2", "mxint8", "nvfp4", "sparse0.5", "2:4",
              "2:4:pairs+int4:had", "outliers0.01+int3", "sparse0.5+int4", "vq2:b4", "noise0.01",
              "int4:had", "mxfp4:had")


@pytest.mark.parametrize("spec", GRAD_SPECS)
@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_gradient_is_straight_through(spec, dtype):
    """d x̂/d x = identity (torchao's fake-quant convention): the upstream gradient comes back
    unchanged, and the forward value is exactly the no-grad x̂."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 64, generator=g).to(dtype).requires_grad_(True)
    upstream = torch.randn(4, 64, generator=g).to(dtype)
    torch.manual_seed(0)
    y = parse_format(spec).quantize(x)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream)
    torch.manual_seed(0)
    with torch.no_grad():
        assert torch.equal(y.detach(), parse_format(spec).quantize(x.detach()))


def test_gradient_through_a_loss_and_a_non_leaf():
    x = torch.randn(8, 32, requires_grad=True)
    w = 2.0 * x  # not a leaf
    loss = parse_format("nvfp4").quantize(w).square().sum()
    loss.backward()
    q = parse_format("nvfp4").quantize(2.0 * x.detach())
    assert torch.allclose(x.grad, 2.0 * 2.0 * q)
