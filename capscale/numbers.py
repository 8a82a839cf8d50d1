"""One grammar for the numbers a user types: on every command-line flag and in sweep specs.

A number is a plain integer or decimal (``3000000000``, ``0.02``, ``3e9``, ``1_000``),
optionally followed by a multiplier:

* decimal: ``k``/``K`` = 10^3, ``M`` = 10^6, ``B``/``G`` = 10^9, ``T`` = 10^12
  (``40k`` = 40,000; ``3B`` = 3,000,000,000);
* binary: ``Ki`` = 2^10, ``Mi`` = 2^20, ``Gi`` = 2^30, ``Ti`` = 2^40
  (``8Ki`` = 8,192; ``1Mi`` = 1,048,576).

Letters are case-insensitive (``3b`` is ``3B``). NaN, infinities and anything else are
refused with a message that names the input and says what would be valid.
"""

from __future__ import annotations

import math
import re

from capscale.errors import CapscaleError

DECIMAL = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}
BINARY = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}

GRAMMAR = ("a number such as 3e9, 0.02, 250M or 8Ki (decimal k=1e3, M=1e6, B/G=1e9, T=1e12; "
           "binary Ki=2^10, Mi=2^20, Gi=2^30, Ti=2^40)")
HELP = ("Numbers: 3000000000, 3e9 or 3B; suffixes k, M, B (or G), T are decimal (1k = 1000), "
        "Ki, Mi, Gi, Ti binary (1Ki = 1024).")

_NUMBER = re.compile(
    r"\s*(?P<sign>[+-])?\s*(?P<mant>(?:\d[\d_]*)?\.?\d[\d_]*(?:e[+-]?\d+)?)\s*(?P<suffix>[kmbgt]i?)?\s*",
    re.IGNORECASE,
)


class NumberError(CapscaleError):
    """A number outside the grammar or its valid range."""


def describe_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                   hi_open: bool = False, integer: bool = False) -> str:
    """'a whole number >= 1', 'a number in (0, 1)', ..."""
    what = "a whole number" if integer else "a number"
    if lo is None and hi is None:
        return what
    if hi is None:
        return f"{what} {'>' if lo_open else '>='} {lo:g}"
    if lo is None:
        return f"{what} {'<' if hi_open else '<='} {hi:g}"
    return f"{what} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def parse_number(text, *, name: str | None = None, lo: float | None = None,
                 hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
                 integer: bool = False) -> float | int:
    """``text`` (a string in the grammar above, or an int/float) as a finite number in the
    range; an ``int`` with ``integer``. Raises :class:`NumberError` naming ``name``."""
    label = f"{name} {text!r}" if name else repr(text)
    valid = describe_range(lo, hi, lo_open=lo_open, hi_open=hi_open, integer=integer)
    if isinstance(text, bool):
        raise NumberError(f"{label} is not {valid}")
    if isinstance(text, (int, float)):
        value = text
    elif isinstance(text, str):
        m = _NUMBER.fullmatch(text)
        if text.strip().lstrip("+-").lower() in ("nan", "inf", "infinity"):
            raise NumberError(f"{label} is not finite; give {valid}")
        if not m or m["mant"].startswith("_") or "__" in m["mant"] or m["mant"].endswith("_"):
            raise NumberError(f"{label} is not {GRAMMAR}")
        mant = m["mant"].replace("_", "")
        suffix = (m["suffix"] or "").lower()
        mult = BINARY.get(suffix) or DECIMAL.get(suffix) or 1
        if re.fullmatch(r"\d+", mant):  # exact for large integers
            value = int(mant) * mult
        else:
            try:
                value = float(mant) * mult
            except OverflowError:
                value = math.inf
        if m["sign"] == "-":
            value = -value
    else:
        raise NumberError(f"{label} is not {valid}")
    if isinstance(value, float) and not math.isfinite(value):
        raise NumberError(f"{label} is not finite; give {valid}")
    if integer:
        if value != int(value):
            raise NumberError(f"{label} is not {valid}")
        value = int(value)
    else:
        value = float(value)
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise NumberError(f"{label} is out of range: give {valid}")
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise NumberError(f"{label} is out of range: give {valid}")
    return value


def binary_alternative(value: int, multiple: int) -> str | None:
    """If ``value`` reads as a decimal suffix (8000 = 8k) whose binary twin (8Ki = 8192) is a
    multiple of ``multiple``, that twin as text ('8Ki (8192)'); else None."""
    for suffix, power in (("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if value % 1000**power == 0:
            twin = value // 1000**power * 1024**power
            if twin % multiple == 0:
                return f"{value // 1000**power}{suffix} ({twin})"
    return None


def format_count(value: float) -> str:
    """3e9 -> '3B', 8192 -> '8Ki', 12345 -> '12,345' (for messages)."""
    v = float(value)
    for suffix, mult in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if v >= mult and v % mult == 0 and v % 1000 != 0:
            return f"{int(v // mult)}{suffix}"
    for suffix, mult in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= mult:
            return f"{v / mult:.4g}{suffix}"
    return f"{v:,.4g}"
