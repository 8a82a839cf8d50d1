"""Text, tokenizers, token caches and batches for training language models.

    from capscale.data import prepare_tokens, BatchSampler, val_batches
    td = prepare_tokens("builtin:wiki", "train:spm:4096")     # tokenize once, then cached
    sampler = BatchSampler(td.train, batch_size=32, seq_len=256, seed=0)
    x, y = sampler.batch(0)                                   # int64 [32, 256]
    for x, y in val_batches(td.val, 32, 256, max_tokens=100_000): ...

This package knows nothing of models or training; the trainer is its client.
"""

from capscale.data.builtin import fetch
from capscale.data.cachedir import cache_root
from capscale.data.sampling import BatchSampler, val_batches, val_windows
from capscale.data.sources import Source, parse_source
from capscale.data.tokenizers import Tokenizer, load_tokenizer
from capscale.data.tokens import TokenData, open_token_cache, prepare_tokens

__all__ = [
    "BatchSampler",
    "Source",
    "TokenData",
    "Tokenizer",
    "cache_root",
    "fetch",
    "load_tokenizer",
    "open_token_cache",
    "parse_source",
    "prepare_tokens",
    "val_batches",
    "val_windows",
]
