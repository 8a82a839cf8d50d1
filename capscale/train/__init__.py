"""Training Llama-style models over compressed representations: one CPU to many GPUs.

    >>> from capscale.train import TrainConfig, train, load_runs
    >>> result = train(TrainConfig(size="100k", w_format="int4:had", a_format="int4:had",
    ...                            tokens_per_param=20, out="runs/int4had"))
    >>> result["loss"], result["N"], result["D"]
    >>> table = load_runs("runs")        # one row per finished run: N, D, loss, w_format, ...

A run is a folder (config.json, metrics.jsonl, checkpoints/, result.json); see
:mod:`capscale.runrecord`.
"""

from __future__ import annotations

from capscale.lazy import lazy_exports

# public name -> the submodule that defines it, imported on first use (PEP 562), so that the
# torch-free settings (capscale.train.config) can be read without the training loop's torch
_EXPORTS = {
    "RunData": "data",
    "RunPlan": "config",
    "TrainConfig": "config",
    "load_result": "records",
    "load_runs": "records",
    "plan": "config",
    "read_metrics": "records",
    "result_row": "records",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
