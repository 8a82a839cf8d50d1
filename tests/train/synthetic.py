"""A synthetic token source for trainer tests: a sparse random Markov chain.

Each token has a few likely successors, so the stream has a conditional entropy far below
its unigram entropy, and a model that learns shows it quickly. Batches follow the
RunData contract: the global batch of step i is a function of (seed, i) only.
"""

from __future__ import annotations

import numpy as np

from capscale.train.data import RunData


def markov_tokens(n: int, vocab: int, seed: int = 0, branching: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    succ = rng.integers(0, vocab, size=(vocab, branching))
    probs = rng.dirichlet(np.ones(branching) * 2.0, size=vocab)
    out = np.empty(n, dtype=np.int64)
    tok = 0
    u = rng.random(n)
    for i in range(n):
        out[i] = tok
        tok = succ[tok, np.searchsorted(np.cumsum(probs[tok]), u[i]).clip(max=branching - 1)]
    return out


def unigram_entropy(tokens: np.ndarray, vocab: int) -> float:
    p = np.bincount(tokens, minlength=vocab) / len(tokens)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def synthetic_data(vocab: int = 64, n_train: int = 60_000, n_val: int = 8_000, seed: int = 0,
                   delay=None) -> RunData:
    """RunData over a Markov stream; ``delay(step)`` (optional) sleeps inside batch fetches."""
    stream = markov_tokens(n_train + n_val, vocab, seed)
    train, val = stream[:n_train], stream[n_train:]

    def train_batches(batch_size: int, seq_len: int, data_seed: int):
        def batch(step: int):
            if delay is not None:
                delay(step)
            rng = np.random.default_rng([data_seed, step])
            starts = rng.integers(0, len(train) - seq_len - 1, size=batch_size)
            idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
            w = train[idx]
            return w[:, :-1], w[:, 1:]
        return batch

    def val_batches(batch_size: int, seq_len: int, max_tokens: int):
        n_win = min(max_tokens, len(val) - 1) // seq_len
        for i in range(0, n_win, batch_size):
            rows = [val[j * seq_len:(j + 1) * seq_len + 1] for j in range(i, min(i + batch_size, n_win))]
            w = np.stack(rows)
            yield w[:, :-1], w[:, 1:]

    return RunData(vocab, train_batches, val_batches,
                   {"data": "synthetic:markov", "tokenizer": "none", "data_key": f"markov-{seed}"})
