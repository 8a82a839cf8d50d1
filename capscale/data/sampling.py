"""Deterministic, seekable batches for language-model training, and fixed validation windows.

Training batches: the training tokens are cut into non-overlapping windows of ``seq_len + 1``
tokens (x is a window's first ``seq_len`` tokens, y the same shifted by one). Each epoch uses
every window once, in a seeded order and with a seeded shift of the window grid (so that
window boundaries move between epochs). Global batch ``i`` is samples
``i*G, ..., i*G + G - 1`` of that endless sequence, where ``G = batch_size * world_size``;
rank ``r`` takes rows ``r*batch_size`` to ``(r+1)*batch_size`` of it. So batch ``i`` depends
only on (tokens, seed, G, seq_len, i): resuming needs the step alone, and 2 ranks with
``batch_size=B/2`` see exactly the rows of 1 rank with ``batch_size=B``.

With gradient accumulation, give ``batch_size`` = this rank's rows per optimizer step and
split ``x`` and ``y`` into micro-batches: the step's data then does not depend on how it is
spread over ranks and micro-steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from capscale.data.rng import mix, stable_permutation
from capscale.errors import CapscaleError

ORDER_STREAM = 0x0BA7C4  # the window order of an epoch
SHIFT_STREAM = 0x5417F7  # the grid shift of an epoch


def _windows_to_tensors(tokens: np.ndarray, starts: np.ndarray, seq_len: int):
    import torch

    idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)[None, :]
    win = torch.from_numpy(np.asarray(tokens[idx]).astype(np.int64))
    return win[:, :-1].contiguous(), win[:, 1:].contiguous()


class BatchSampler:
    """``batch(i)`` -> (x, y), int64 tensors [batch_size, seq_len]; also an iterator from
    ``step`` on, with ``state_dict()`` / ``load_state_dict()`` holding the step."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if getattr(tokens, "ndim", None) != 1:
            raise CapscaleError("BatchSampler needs a 1-D array of token ids")
        if batch_size < 1 or seq_len < 1:
            raise CapscaleError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise CapscaleError(f"rank {rank} is not in a world of {world_size} process(es)")
        n = len(tokens)
        # windows per epoch, so that any shift in [0, seq_len) keeps the last window inside
        self.windows_per_epoch = (n - seq_len) // seq_len
        if self.windows_per_epoch < 1:
            raise CapscaleError(f"{n:,} training tokens are too few for windows of {seq_len} "
                                f"tokens: need at least {2 * seq_len}")
        self.tokens = tokens
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.global_batch_size = self.batch_size * self.world_size
        self.step = 0
        self._orders: dict[int, np.ndarray] = {}

    @property
    def tokens_per_step(self) -> int:
        """Tokens of x over all ranks in one step."""
        return self.global_batch_size * self.seq_len

    def epoch_of(self, i: int) -> float:
        """How many passes over the training windows batches 0..i-1 made."""
        return i * self.global_batch_size / self.windows_per_epoch

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = stable_permutation(self.windows_per_epoch, self.seed,
                                                     ORDER_STREAM, epoch)
        return self._orders[epoch]

    def global_starts(self, i: int) -> np.ndarray:
        """Start offsets (into ``tokens``) of the windows of global batch ``i``, all ranks."""
        if i < 0:
            raise CapscaleError(f"batch index must be >= 0, got {i}")
        sample = i * self.global_batch_size + np.arange(self.global_batch_size, dtype=np.int64)
        epoch = sample // self.windows_per_epoch
        pos = sample % self.windows_per_epoch
        starts = np.empty_like(sample)
        for e in np.unique(epoch):
            sel = epoch == e
            shift = mix(self.seed, SHIFT_STREAM, int(e)) % self.seq_len
            starts[sel] = self._order(int(e))[pos[sel]] * self.seq_len + shift
        return starts

    def batch(self, i: int):
        """This rank's rows of global batch ``i``: (x, y), int64 tensors [batch_size, seq_len]."""
        starts = self.global_starts(i)[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return _windows_to_tensors(self.tokens, starts, self.seq_len)

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self):
        out = self.batch(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"step": self.step, "seed": self.seed, "seq_len": self.seq_len,
                "global_batch_size": self.global_batch_size, "n_tokens": len(self.tokens)}

    def load_state_dict(self, state: dict) -> None:
        """Resume at ``state['step']``; the data, seed and global batch must be the same
        (the number of ranks may differ)."""
        for name in ("seed", "seq_len", "global_batch_size", "n_tokens"):
            mine = self.state_dict()[name]
            if name in state and state[name] != mine:
                raise CapscaleError(f"cannot resume the batch order: the saved {name} is "
                                    f"{state[name]}, this sampler has {mine}")
        self.step = int(state["step"])


def val_windows(n_tokens: int, seq_len: int, max_tokens: int | None = None) -> int:
    """How many validation windows ``val_batches`` uses in all (over all ranks)."""
    n = (n_tokens - 1) // seq_len
    if max_tokens is not None:
        n = min(n, int(max_tokens) // seq_len)
    if n < 1:
        raise CapscaleError(f"validation needs at least one window of {seq_len} tokens (+1); "
                            f"there are {n_tokens:,} tokens and a cap of {max_tokens}")
    return n


def val_batches(tokens: np.ndarray, batch_size: int, seq_len: int,
                max_tokens: int | None = None, rank: int = 0,
                world_size: int = 1) -> Iterator[tuple]:
    """(x, y) batches over the fixed contiguous windows ``[k*seq_len, (k+1)*seq_len]`` of the
    validation tokens, from the start, up to ``max_tokens`` tokens; the same on every call.

    With several ranks, rank ``r`` takes windows ``r, r + world_size, ...``; summing loss and
    token counts over ranks gives the same mean as one process. The last batch may be smaller.
    """
    if batch_size < 1 or seq_len < 1:
        raise CapscaleError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise CapscaleError(f"rank {rank} is not in a world of {world_size} process(es)")
    mine = np.arange(rank, val_windows(len(tokens), seq_len, max_tokens), world_size,
                     dtype=np.int64) * seq_len
    for i in range(0, len(mine), batch_size):
        yield _windows_to_tensors(tokens, mine[i:i + batch_size], seq_len)
