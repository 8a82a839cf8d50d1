"""The Llama-style model of the papers and the layer that trains it over compressed formats.

    >>> from capscale.model import Llama, config_for_size, compress_model
    >>> model = Llama(config_for_size("30M", vocab_size=32000))
    >>> compress_model(model, "int4:had", "int4:had", grad_rule="trust")

The names below are imported on first use (PEP 562), so that torch-free submodules such as
``capscale.model.presets`` (which the command line reads) do not pull torch in.
"""

from __future__ import annotations

from capscale.lazy import lazy_exports

# public name -> the submodule that defines it
_EXPORTS = {
    "BLOCK_LINEARS": "compressed_linear",
    "CompressedLinear": "compressed_linear",
    "compress_model": "compressed_linear",
    "GradRule": "gradient_rules",
    "SIZES": "llama",
    "Llama": "llama",
    "LlamaConfig": "llama",
    "config_for_size": "llama",
    "size_preset": "llama",
    "PartGradient": "part_gradients",
    "register_part_gradient": "part_gradients",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
