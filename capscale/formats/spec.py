"""Format spec strings: parse "sparse0.5+int4:g128:had" into a Format, and print it back.

Grammar: parts joined by "+", applied left to right; each part is a base name followed by
":"-separated modifiers. ":had" (or ":hadB") may end the last part: it rotates the whole
pipeline in Hadamard blocks of 128 (or B) along the row. Canonical printing drops defaults,
so parse_format(str(f)) == f and equal formats print equally.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from capscale.errors import CapscaleError
from capscale.formats.base import Format, Part, Scaling
from capscale.formats.block import MX_ALIASES, MXQuantizer, NVFP4Quantizer
from capscale.formats.hadamard import is_power_of_two
from capscale.formats.noise import NoiseInjection
from capscale.formats.registry import lookup as lookup_plugin
from capscale.formats.scalar import (
    FPQuantizer,
    IntQuantizer,
    LloydMaxQuantizer,
    NF4Quantizer,
    TernaryQuantizer,
)
from capscale.formats.sparse import MagnitudeSparsity, NMSparsity, Outliers
from capscale.formats.vq import VectorQuantizer

DENSE_NAMES = ("none", "dense", "bf16")
FP_ALIASES = {"fp4": (2, 1), "fp6": (2, 3), "fp8": (4, 3)}
NUMBER = r"(\d+(?:\.\d*)?(?:e-?\d+)?|\.\d+(?:e-?\d+)?)"


@dataclass(frozen=True)
class Family:
    """A family of formats: how its base name looks, how to build a part, examples for help."""

    name: str
    pattern: str
    build: Callable[[re.Match, list[str], str], Part]
    examples: tuple[str, ...]
    about: str


def _take(mods: list[str], allowed: set[str]) -> set[str]:
    found = {m for m in mods if m in allowed}
    for m in found:
        mods.remove(m)
    return found


def _scaling(mods: list[str], default: Scaling, part: str) -> Scaling:
    rules = _take(mods, {"rms", "absmax", "mse"})
    if len(rules) > 1:
        raise CapscaleError(f"{part}: give one scale rule (rms, absmax or mse), not {sorted(rules)}")
    groups: list[str | int] = sorted(_take(mods, {"tensor", "row"}))
    for m in [m for m in mods if re.fullmatch(r"g\d+", m)]:
        mods.remove(m)
        g = int(m[1:])
        if g < 1:
            raise CapscaleError(f"{part}: the group size in '{m}' must be a positive integer")
        groups.append(g)
    if len(groups) > 1:
        raise CapscaleError(f"{part}: give one granularity (tensor, row or gG), not {groups}")
    return Scaling(rules.pop() if rules else default.rule, groups[0] if groups else default.group)


def _finish(part: Part, mods: list[str], spec: str) -> Part:
    if mods:
        valid = ", ".join(part.accepted_modifiers) or "none"
        raise CapscaleError(
            f"{spec}: unknown modifier{'s' if len(mods) > 1 else ''} {', '.join(repr(m) for m in mods)}"
            f"; {part.spec.split(':')[0]} takes: {valid}"
        )
    return part


def _int(m, mods, spec):
    zero = bool(_take(mods, {"zero"}))
    return IntQuantizer(scaling=_scaling(mods, IntQuantizer.default_scaling, spec), n_bits=int(m[1]), zero=zero)


def _fp(m, mods, spec):
    exp, man = FP_ALIASES[m[0]] if m[0] in FP_ALIASES else (int(m[1]), int(m[2]))
    return FPQuantizer(scaling=_scaling(mods, FPQuantizer.default_scaling, spec), exp=exp, man=man)


def _sparse(m, mods, spec):
    per_row = "row" in _take(mods, {"row", "tensor"})
    return MagnitudeSparsity(sparsity=_number(m[1], spec), per_row=per_row)


def _outliers(m, mods, spec):
    per_row = "row" in _take(mods, {"row", "tensor"})
    return Outliers(fraction=_number(m[1], spec), per_row=per_row)


def _vq(m, mods, spec):
    bits = [x for x in mods if re.fullmatch(r"b\d+", x)]
    for x in bits:
        mods.remove(x)
    if len(bits) > 1:
        raise CapscaleError(f"{spec}: give the bits per vector once (e.g. vq4:b8)")
    return VectorQuantizer(dim=int(m[1]), n_bits=int(bits[0][1:]) if bits else 8)


def _noise(m, mods, spec):
    dist = _take(mods, {"gaussian", "uniform"})
    if len(dist) > 1:
        raise CapscaleError(f"{spec}: noise is gaussian or uniform, not both")
    return NoiseInjection(mse=_number(m[1], spec), distribution=dist.pop() if dist else "gaussian")


def _mx(m, mods, spec):
    name = MX_ALIASES.get(m[0], m[0])
    return MXQuantizer(element=name[2:])


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CapscaleError(f"{spec}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise CapscaleError(f"{spec}: '{text}' is not a finite number")
    return value


FAMILIES: tuple[Family, ...] = (
    Family("INT (QuEST grid)", r"int(\d+)", _int, ("int4", "int2", "int4:absmax:g128", "int8:zero", "int4:mse:g64"),
           "b-bit uniform grid, 2^b levels without zero (':zero' for the signed grid with a zero); "
           "default scale: outermost level at the Gaussian-MSE-optimal α*(b)·RMS per row"),
    Family("ternary", r"ternary", lambda m, mods, s: TernaryQuantizer(scaling=_scaling(mods, TernaryQuantizer.default_scaling, s)),
           ("ternary",), "levels {-1, 0, 1}·scale, 1.6 bits per value (five trits per byte)"),
    Family("FP ExMy", r"e(\d+)m(\d+)|fp4|fp6|fp8", _fp, ("e2m1", "fp4", "e3m2", "e4m3", "e5m2", "e3m0"),
           "floating-point grid with subnormals, RNE, saturating; any split of 4 to 8 bits "
           "(fp4 = e2m1, fp6 = e2m3, fp8 = e4m3); default scale as INT"),
    Family("NF4", r"nf4", lambda m, mods, s: NF4Quantizer(scaling=_scaling(mods, NF4Quantizer.default_scaling, s)),
           ("nf4", "nf4:g128"), "bitsandbytes' NormalFloat4, absmax per block of 64 (fp32 absmax)"),
    Family("Lloyd–Max", r"lloydmax(\d+)", lambda m, mods, s: LloydMaxQuantizer(scaling=_scaling(mods, LloydMaxQuantizer.default_scaling, s), n_bits=int(m[1])),
           ("lloydmax2", "lloydmax3", "lloydmax4"), "the MSE-optimal b-bit scalar grid for N(0, 1), RMS-scaled"),
    Family("MX (OCP v1.0)", r"mx(?:fp4|fp6_e2m3|fp6_e3m2|fp8_e4m3|fp8_e5m2|int8|fp6|fp8)", _mx,
           ("mxfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3", "mxfp8_e5m2", "mxint8"),
           "blocks of 32 with an E8M0 scale 2^(floor(log2 amax) - emax_elem)"),
    Family("NVFP4", r"nvfp4", lambda m, mods, s: NVFP4Quantizer(), ("nvfp4",),
           "E2M1 in blocks of 16 with E4M3 block scales and an FP32 tensor scale"),
    Family("magnitude sparsity", rf"sparse{NUMBER}", _sparse, ("sparse0.5", "sparse0.75:row"),
           "zero the smallest |x| (per tensor, or ':row'); mask: 1 bit per value; kept values bf16 "
           "unless a quantizer follows"),
    Family("N:M sparsity", r"(\d+):(\d+)", lambda m, mods, s: NMSparsity(n=int(m[1]), m=int(m[2]), pairs=bool(_take(mods, {"pairs"}))),
           ("2:4", "4:8", "2:4:pairs"), "keep N of every M along the row (':pairs': N of M pairs, QuEST's 4:8)"),
    Family("outliers", rf"outliers{NUMBER}", _outliers, ("outliers0.01+int3:g32",),
           "keep the largest fraction p exactly (bf16 value + 32-bit index); the rest go to the next part"),
    Family("vector quantization", r"vq(\d+)", _vq, ("vq2:b4", "vq4:b8", "vq8:b8"),
           "Gaussian-optimal code book (k-means) in d = 1, 2, 4, 8 dimensions at b bits per vector, RMS-scaled rows"),
    Family("noise injection", rf"noise{NUMBER}", _noise, ("noise0.0115", "noise0.01:uniform"),
           "x + noise with the given relative MSE (a training proxy; no storage cost)"),
)


def _split_part(text: str) -> tuple[str, list[str]]:
    nm = re.match(r"^(\d+:\d+)(?::(.*))?$", text)
    if nm:
        base, rest = nm[1], nm[2]
    else:
        base, _, rest = text.partition(":")
    mods = [m for m in rest.split(":")] if rest else []
    if any(m == "" for m in mods):
        raise CapscaleError(f"'{text}': empty modifier (two ':' in a row or a trailing ':')")
    return base, mods


def _parse_part(text: str, full: str) -> tuple[Part, int | None]:
    base, mods = _split_part(text)
    rotation = None
    for m in [m for m in mods if re.fullmatch(r"had\d*", m)]:
        mods.remove(m)
        rotation = int(m[3:]) if len(m) > 3 else 128
        if not is_power_of_two(rotation):
            raise CapscaleError(f"'{text}' in '{full}': the Hadamard block must be a power of two, got {rotation}")
    for fam in FAMILIES:
        m = re.fullmatch(fam.pattern, base)
        if m:
            part = fam.build(m, mods, text)
            return _finish(part, mods, text), rotation
    plugin = lookup_plugin(base)  # a user format registered under this name
    if plugin is not None:
        return _finish(plugin.part, mods, text), rotation
    bases = "; ".join(f"{f.name}: {', '.join(f.examples[:3])}" for f in FAMILIES)
    raise CapscaleError(
        f"unknown format '{base}' in '{full}'. Valid formats are 'none' (uncompressed) and — "
        f"{bases}. Join parts with '+' (e.g. sparse0.5+int4); add ':had' to rotate. "
        "Run `capscale formats` for the full list; user formats need --plugin FILE.py (or "
        "capscale.formats.register)."
    )


def parse_format(spec: str | Format) -> Format:
    """Parse a format spec string (or pass a Format through). Raises CapscaleError with the bad
    part named and what would be valid."""
    if isinstance(spec, Format):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise CapscaleError(f"a format spec must be a non-empty string, got {spec!r}")
    full = spec.strip().lower().replace(" ", "")
    if full in DENSE_NAMES:
        return Format()
    texts = full.split("+")
    if any(not t for t in texts):
        raise CapscaleError(f"'{spec}': empty part (a '+' at either end or two in a row)")
    parts, rotation = [], None
    for i, text in enumerate(texts):
        if text in DENSE_NAMES:
            raise CapscaleError(f"'{spec}': '{text}' (uncompressed) cannot be combined with other parts")
        part, rot = _parse_part(text, full)
        if rot is not None:
            if i != len(texts) - 1:
                raise CapscaleError(
                    f"'{spec}': put ':had' on the last part; it rotates the whole pipeline "
                    f"(e.g. {'+'.join(t.split(':had')[0] for t in texts)}:had)"
                )
            rotation = rot
        parts.append(part)
    for part in parts[:-1]:
        if part.terminal:
            raise CapscaleError(
                f"'{spec}': '{part.spec}' represents every value, so it must be the last part "
                "(sparsity and outliers come first, e.g. sparse0.5+int4)"
            )
    if isinstance(parts[-1], VectorQuantizer) and len(parts) > 1:
        raise CapscaleError(f"'{spec}': vector quantization cannot follow sparsity or outliers")
    return Format(tuple(parts), rotation)


def is_format_spec(text: str) -> bool:
    """True when `text` parses as a format spec (free labels of foreign data do not)."""
    try:
        parse_format(text)
    except CapscaleError:
        return False
    return True
