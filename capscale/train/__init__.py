"""Training Llama-style models over compressed representations: one CPU to many GPUs.

    >>> from capscale.train import TrainConfig, train, load_runs
    >>> result = train(TrainConfig(size="100k", w_format="int4:had", a_format="int4:had",
    ...                            tokens_per_param=20, out="runs/int4had"))
    >>> result["loss"], result["N"], result["D"]
    >>> table = load_runs("runs")        # one row per finished run: N, D, loss, w_format, ...

A run is a folder (config.json, metrics.jsonl, checkpoints/, result.json); see
:mod:`capscale.runrecord`.
"""

from capscale.train.config import RunPlan, TrainConfig, plan
from capscale.train.data import RunData
from capscale.train.loop import train
from capscale.train.records import load_result, load_runs, read_metrics, result_row

__all__ = [
    "RunData",
    "RunPlan",
    "TrainConfig",
    "load_result",
    "load_runs",
    "plan",
    "read_metrics",
    "result_row",
    "train",
]
