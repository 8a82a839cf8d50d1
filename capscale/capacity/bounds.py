"""Lower bounds on GMSE at b bits per value, for a Gaussian source.

- Shannon's rate–distortion bound D(b) = 4^(−b): no code of any kind does better.
- The best scalar quantizer with 2^b levels (Lloyd–Max), for integer b: no scalar grid with
  that many levels does better, whatever its scale. Fractional b uses ⌊2^b⌋ levels.
  Beyond 2^8 levels the grid is not computed: n²·D of the Lloyd–Max grid
  grows with n toward Panter and Dite's high-resolution limit π√3/2 ≈ 2.7207, so its value
  at 256 levels, :data:`N2D_256`, over n² bounds every larger grid from below.
"""

from __future__ import annotations

import math

from capscale.errors import CapscaleError
from capscale.formats.gaussian import grid_gmse
from capscale.formats.grids import lloyd_max_levels

MAX_EXACT_LEVELS = 256
# n²·D of the 256-level Lloyd–Max grid (lloyd_max_levels(256); a slow test recomputes it)
N2D_256 = 2.6991055908084


def shannon_bound(bits: float) -> float:
    return 4.0 ** (-bits)


def scalar_bound(bits: float) -> float:
    if not 0 <= bits < math.inf:
        raise CapscaleError(f"bits per value must be non-negative and finite, got {bits}")
    if bits > 60:  # 2^b levels overflow nothing yet, but ⌊2^b⌋ = 2^b to the last bit
        return N2D_256 * 4.0 ** (-bits)
    if bits > math.log2(MAX_EXACT_LEVELS) + 1e-9:
        return N2D_256 / math.floor(2.0**bits + 1e-9) ** 2
    n_levels = max(1, math.floor(2.0**bits + 1e-9))
    return grid_gmse(lloyd_max_levels(n_levels)) if n_levels > 1 else 1.0
