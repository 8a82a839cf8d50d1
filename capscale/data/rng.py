"""Version-stable pseudo-random choices for splits and batch orders.

numpy does not promise that its random streams stay the same across releases, and a resumed
run must see exactly the batches it would have seen. So every random choice in the data layer
is a splitmix64 hash of integers (seed, stream, index): the same on every machine and version.
"""

from __future__ import annotations

import numpy as np

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB


def _finalize_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * _C1) & _MASK
    z = ((z ^ (z >> 27)) * _C2) & _MASK
    return z ^ (z >> 31)


def mix(*words: int) -> int:
    """One 64-bit word from several integers (negative ones included), order-sensitive."""
    h = 0
    for w in words:
        h = _finalize_int(((h ^ (int(w) & _MASK)) + _GOLDEN) & _MASK)
    return h


def hash_sequence(n: int, *key: int) -> np.ndarray:
    """``n`` independent 64-bit hashes of (key, 0), ..., (key, n-1) as a uint64 array."""
    base = np.uint64(mix(*key))
    with np.errstate(over="ignore"):
        z = base + (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(_GOLDEN))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_C1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_C2)
        return z ^ (z >> np.uint64(31))


def stable_permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of ``range(n)`` (int64) that depends only on ``key``."""
    return np.argsort(hash_sequence(n, *key), kind="stable").astype(np.int64, copy=False)
