"""Lower bounds on GMSE at b bits per value, for a Gaussian source.

- Shannon's rate–distortion bound D(b) = 4^(−b): no code of any kind does better.
- The best scalar quantizer with 2^b levels (Lloyd–Max), for integer b: no scalar grid with
  that many levels does better, whatever its scale. Fractional b uses ⌊2^b⌋ levels.
"""

from __future__ import annotations

import math

from capscale.errors import CapscaleError
from capscale.formats.gaussian import grid_gmse
from capscale.formats.grids import lloyd_max_levels


def shannon_bound(bits: float) -> float:
    return 4.0 ** (-bits)


def scalar_bound(bits: float) -> float:
    if not bits >= 0:
        raise CapscaleError(f"bits per value must be non-negative, got {bits}")
    n_levels = max(1, math.floor(2.0**bits + 1e-9))
    return grid_gmse(lloyd_max_levels(n_levels)) if n_levels > 1 else 1.0
