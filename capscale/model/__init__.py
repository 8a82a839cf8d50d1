"""The Llama-style model of the papers and the layer that trains it over compressed formats.

    >>> from capscale.model import Llama, config_for_size, compress_model
    >>> model = Llama(config_for_size("30M", vocab_size=32000))
    >>> compress_model(model, "int4:had", "int4:had", grad_rule="trust")
"""

from capscale.model.compressed_linear import (
    BLOCK_LINEARS,
    CompressedLinear,
    compress_model,
)
from capscale.model.gradient_rules import GradRule
from capscale.model.llama import SIZES, Llama, LlamaConfig, config_for_size, size_preset
from capscale.model.part_gradients import PartGradient, register_part_gradient

__all__ = [
    "BLOCK_LINEARS",
    "SIZES",
    "CompressedLinear",
    "GradRule",
    "Llama",
    "LlamaConfig",
    "PartGradient",
    "compress_model",
    "config_for_size",
    "register_part_gradient",
    "size_preset",
]
