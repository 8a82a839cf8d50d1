"""The trainer's view of data: a vocabulary size, training batches by step, validation windows.

:class:`RunData` is deliberately small so that any token source plugs in. The trainer asks
for the *global* batch of optimizer step ``i`` (every rank gets the same rows and takes its
own slice), which makes a run on one process and on several see exactly the same sequences,
and makes resuming a matter of asking for batch ``i`` again. ``open_run_data`` builds it from
the project's data layer (``capscale.data``: corpora, tokenizers, token cache, sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from capscale.errors import CapscaleError

Batch = tuple[np.ndarray, np.ndarray]  # inputs and targets, int64 [B, T] (arrays or tensors)


@dataclass
class RunData:
    """vocab_size; ``train_batches(batch_size, seq_len, seed)`` returns a function from step to
    the global (x, y) batch of that step; ``val_batches(batch_size, seq_len, max_tokens)``
    returns the fixed validation windows; ``info`` goes into the run record."""

    vocab_size: int
    train_batches: Callable[[int, int, int], Callable[[int], Batch]]
    val_batches: Callable[[int, int, int], Iterable[Batch]]
    info: dict = field(default_factory=dict)


def open_run_data(cfg, planned_tokens: int | None = None) -> RunData:
    """Tokenize (or load from the token cache) ``cfg.data`` with ``cfg.tokenizer``.

    A streamed hub source (C4) has no end: it is read up to the run's planned training
    tokens plus its validation tokens (``planned_tokens``), with a 10% margin so that the
    held-out documents do not eat into the training stream.
    """
    from capscale.data import BatchSampler, parse_source, prepare_tokens, val_batches

    kwargs = {"cache_dir": cfg.data_cache, "progress": cfg.progress}
    if cfg.val_fraction is not None:
        kwargs["val_fraction"] = cfg.val_fraction
    if parse_source(cfg.data, cache_dir=cfg.data_cache).streaming:
        if planned_tokens is None:
            raise CapscaleError(f"data source {cfg.data!r} is streamed: the run length must be known")
        kwargs["max_tokens"] = int(1.1 * (planned_tokens + cfg.val_tokens))
    td = prepare_tokens(data=cfg.data, tokenizer=cfg.tokenizer, **kwargs)

    def train_batches(batch_size: int, seq_len: int, seed: int) -> Callable[[int], Batch]:
        return BatchSampler(td.train, batch_size, seq_len, seed).batch

    def val(batch_size: int, seq_len: int, max_tokens: int) -> Iterable[Batch]:
        return val_batches(td.val, batch_size, seq_len, max_tokens)

    info = {"data": cfg.data, "tokenizer": cfg.tokenizer, "data_key": td.key,
            "train_tokens": int(len(td.train)), "val_tokens": int(len(td.val)),
            "eos_id": td.eos_id}
    return RunData(int(td.vocab_size), train_batches, val, info)
