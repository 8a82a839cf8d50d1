"""The unified paper's capacity law ρ(GMSE) and its published constants.

ρ(R) = L · tanh(F · log_{1/4} GMSE(R))^C  — Panferov et al., "Unified Scaling Laws for
Compressed Representations" (arXiv 2506.01863). The constants below are the paper's fit on
its Llama/C4 runs (L 1.0 ± 0.7, F 0.41 ± 0.02, C 1.39 ± 0.08); `capscale fit --law unified`
refits them on your runs.
"""

from __future__ import annotations

import math

import numpy as np

# ln 4: GMSE = 4^(−b) for a representation worth b 'Gaussian bits', so b = −ln GMSE / LOG4
LOG4 = math.log(4.0)

UNIFIED_LLAMA_C4 = {"L": 1.0, "F": 0.41, "C": 1.39}
# the ± the paper gives with its Llama/C4 fit (law and curve), read as one standard error each
UNIFIED_LLAMA_C4_FIT = {"alpha": (0.13, 0.05), "beta": (0.33, 0.06), "E": (1.3, 0.5),
                        "L": (1.0, 0.7), "F": (0.41, 0.02), "C": (1.39, 0.08)}
UNIFIED_LLAMA_C4_SOURCE = "Panferov et al. 2025 (arXiv 2506.01863), Llama/C4 fit: L 1.0, F 0.41, C 1.39"


def log_quarter(gmse):
    """log_{1/4} GMSE: how many 'Gaussian bits' a representation is worth (4^(−b) = GMSE).
    The one definition of this coordinate: the laws, the probe and the tables use it."""
    return -np.log(gmse) / LOG4


def tanh_capacity(gmse, L, F, C):
    """The unified paper's curve L·tanh(F·log_{1/4} GMSE)^C, elementwise, for GMSE in (0, 1]
    and parameters that broadcast against it (the fitted law evaluates it per curve)."""
    return L * np.tanh(F * log_quarter(gmse)) ** C


def rho_unified(gmse, L: float = 1.0, F: float = 0.41, C: float = 1.39):
    """Capacity ρ(GMSE) = L·tanh(F·log_{1/4} GMSE)^C; 1·L for GMSE → 0, 0 for GMSE = 1."""
    g = np.asarray(gmse, dtype=np.float64)
    with np.errstate(divide="ignore"):
        out = tanh_capacity(np.clip(g, 1e-300, 1.0), L, F, C)
    return float(out) if np.ndim(out) == 0 else out
