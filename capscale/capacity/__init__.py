"""The capacity probe: GMSE of any format on Gaussian data, its lower bounds, and ρ(GMSE).

Knows formats, Gaussian data and numerical integration; nothing of training.
"""

from capscale.capacity.bounds import scalar_bound, shannon_bound
from capscale.capacity.law import (
    UNIFIED_LLAMA_C4,
    UNIFIED_LLAMA_C4_SOURCE,
    log_quarter,
    rho_unified,
)
from capscale.capacity.probe import DEFAULT_SHAPE, GMSEResult, exact_gmse, gmse

__all__ = [
    "DEFAULT_SHAPE",
    "GMSEResult",
    "UNIFIED_LLAMA_C4",
    "UNIFIED_LLAMA_C4_SOURCE",
    "exact_gmse",
    "gmse",
    "log_quarter",
    "rho_unified",
    "scalar_bound",
    "shannon_bound",
]
