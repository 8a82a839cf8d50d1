"""Formats on real tensors: weights of a checkpoint, activations captured with forward hooks,
heavy-tailed synthetic tensors; relative MSE, effective bits, ratio to GMSE and tails, and
where the ranking of formats on real tensors departs from their ranking on Gaussian data.

    >>> from capscale.probe import load_weights, probe
    >>> result = probe(load_weights("runs/30M-wnone-anone-s0"), ["int4", "nvfp4", "mxfp4"])
    >>> result.summary, result.disagreements

A client of ``formats`` and ``capacity``; for activations, of ``model`` and ``train``.
"""

from capscale.probe.measure import ProbeResult, disagreements, probe, relative_mse, tails
from capscale.probe.tensors import (
    SYNTHETIC,
    ProbeTensor,
    capture_activations,
    load_weights,
    synthetic_tensor,
    synthetic_tensors,
)

__all__ = [
    "SYNTHETIC",
    "ProbeResult",
    "ProbeTensor",
    "capture_activations",
    "disagreements",
    "load_weights",
    "probe",
    "relative_mse",
    "synthetic_tensor",
    "synthetic_tensors",
    "tails",
]
