"""Number arguments with their valid range, checked where they enter (argparse types).

``number(lo=0, lo_open=True)`` accepts a finite float above 0 and refuses NaN, inf and
anything out of range with a message that says what would be valid.
"""

from __future__ import annotations

import argparse
import math


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, integer: bool = False):
    """An argparse ``type``: a finite number (an integer with ``integer``) in the range."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    valid = (f"{'a whole number' if integer else 'a number'}"
             + ("" if lo is None and hi is None else
                f" in {left}{'-inf' if lo is None else f'{lo:g}'}, "
                f"{'inf' if hi is None else f'{hi:g}'}{right}"))

    def parse(text: str):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}") from None
        if not math.isfinite(value) or (integer and value != int(value)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}")
        if lo is not None and (value < lo or (lo_open and value == lo)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}")
        if hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"{text!r} is not {valid}")
        return int(value) if integer else value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


POSITIVE = number(0, lo_open=True)
FRACTION = number(0, 1, lo_open=True, hi_open=True)  # a probability or interval level
COUNT0 = number(0, integer=True)  # 0, 1, 2, ...
COUNT1 = number(1, integer=True)  # 1, 2, ...
