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

Batch = tuple[np.ndarray, np.ndarray]  # inputs and targets, int64 [B, T]


@dataclass
class RunData:
    """vocab_size; ``train_batches(batch_size, seq_len, seed)`` returns a function from step to
    the global (x, y) batch of that step; ``val_batches(batch_size, seq_len, max_tokens)``
    returns the fixed validation windows; ``info`` goes into the run record."""

    vocab_size: int
    train_batches: Callable[[int, int, int], Callable[[int], Batch]]
    val_batches: Callable[[int, int, int], Iterable[Batch]]
    info: dict = field(default_factory=dict)


def open_run_data(cfg) -> RunData:
    """Tokenize (or load from the token cache) ``cfg.data`` with ``cfg.tokenizer``."""
    try:
        from capscale.data import BatchSampler, prepare_tokens, val_batches
    except ImportError as e:  # pragma: no cover - only without the data layer
        raise CapscaleError(f"the data layer is not available: {e}") from None
    kwargs = {"cache_dir": cfg.data_cache, "progress": cfg.progress}
    if cfg.val_fraction is not None:
        kwargs["val_fraction"] = cfg.val_fraction
    td = prepare_tokens(data=cfg.data, tokenizer=cfg.tokenizer, **kwargs)

    def train_batches(batch_size: int, seq_len: int, seed: int) -> Callable[[int], Batch]:
        sampler = BatchSampler(td.train, batch_size, seq_len, seed)
        return sampler.batch

    def val(batch_size: int, seq_len: int, max_tokens: int) -> Iterable[Batch]:
        return val_batches(td.val, batch_size, seq_len, max_tokens)

    info = {"data": cfg.data, "tokenizer": cfg.tokenizer, "data_key": getattr(td, "key", None),
            "train_tokens": int(len(td.train)), "val_tokens": int(len(td.val)),
            "eos_id": getattr(td, "eos_id", None), "meta": getattr(td, "meta", None)}
    return RunData(int(td.vocab_size), train_batches, val, info)
