"""A library of compressed formats: pure tensor functions x ↦ x̂ with honest bits per value.

    >>> from capscale.formats import parse_format
    >>> f = parse_format("sparse0.5+int4")
    >>> x_hat = f.quantize(x); f.bits_per_value

Knows nothing of training, models or laws.
"""

from capscale.formats.base import REFERENCE_SHAPE, Format, Part, Scaling
from capscale.formats.hadamard import fwht, hadamard_matrix
from capscale.formats.registry import load_plugin, load_plugins, register, registered, unregister
from capscale.formats.spec import FAMILIES, is_format_spec, parse_format

__all__ = [
    "FAMILIES",
    "Format",
    "Part",
    "REFERENCE_SHAPE",
    "Scaling",
    "fwht",
    "hadamard_matrix",
    "is_format_spec",
    "load_plugin",
    "load_plugins",
    "parse_format",
    "register",
    "registered",
    "unregister",
]
