"""The capacity probe: GMSE of any format on Gaussian data, its lower bounds, and ρ(GMSE).

Knows formats, Gaussian data and numerical integration; nothing of training. The capacity
law (``rho_unified``, ``log_quarter``) needs numpy only and is imported at once; the probe
and the bounds, which need the formats (and torch), load when first used.
"""

from importlib import import_module

from capscale.capacity.law import (
    LOG4,
    UNIFIED_LLAMA_C4,
    UNIFIED_LLAMA_C4_SOURCE,
    log_quarter,
    rho_unified,
)

_LAZY = {"DEFAULT_SHAPE": "probe", "GMSEResult": "probe", "exact_gmse": "probe", "gmse": "probe",
         "scalar_bound": "bounds", "shannon_bound": "bounds"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f"capscale.capacity.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'capscale.capacity' has no attribute {name!r}")


__all__ = [
    "DEFAULT_SHAPE",
    "GMSEResult",
    "LOG4",
    "UNIFIED_LLAMA_C4",
    "UNIFIED_LLAMA_C4_SOURCE",
    "exact_gmse",
    "gmse",
    "log_quarter",
    "rho_unified",
    "scalar_bound",
    "shannon_bound",
]
