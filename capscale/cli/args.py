"""Number arguments with their valid range, checked where they enter (argparse types).

Every numeric flag parses its text with :func:`capscale.numbers.parse_number`, the one
number grammar of capscale: ``3e9``, ``3B``, ``250M``, ``40k`` (decimal) and ``8Ki``, ``1Mi``
(binary). ``number(lo=0, lo_open=True)`` accepts a finite number above 0 and refuses NaN,
inf, garbage and anything out of range with a message that says what would be valid.
"""

from __future__ import annotations

import argparse

from capscale.numbers import NumberError, parse_number


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False):
    """An argparse ``type``: a finite number (an integer with ``integer``) in the range."""

    def parse(text: str):
        try:
            return parse_number(text, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open,
                                integer=integer)
        except NumberError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def number_list(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                integer: bool = False):
    """An argparse ``type``: comma-separated numbers, each in the grammar and the range."""
    one = number(lo, hi, lo_open=lo_open, integer=integer)

    def parse(text: str):
        values = [one(v) for v in text.split(",") if v.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} holds no number")
        return values

    parse.__name__ = "number list"
    return parse


NUMBER = number()  # any finite number
INTEGER = number(integer=True)  # any whole number (ranges checked by the config)
POSITIVE = number(0, lo_open=True)
NONNEGATIVE = number(0)
FRACTION = number(0, 1, lo_open=True, hi_open=True)  # a probability or interval level
COUNT0 = number(0, integer=True)  # 0, 1, 2, ...
COUNT1 = number(1, integer=True)  # 1, 2, ...
