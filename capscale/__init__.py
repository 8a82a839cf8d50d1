"""capscale: how well a model trains over a compressed representation.

Layers (arrows point to what a layer may import):
formats <- capacity <- laws;  formats <- model <- train;  sweep/report/cli on top.
Shared by all, torch-free: errors, io, numbers, durations, and runrecord (a run folder's
files, statuses and runs-table columns).
"""

__version__ = "0.1.0"

from capscale.errors import CapscaleError

__all__ = ["CapscaleError", "__version__"]
