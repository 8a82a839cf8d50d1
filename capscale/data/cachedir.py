"""Where the data layer keeps what it makes: token caches, trained tokenizers, fetched corpora.

Below the capscale cache root (see :mod:`capscale.cache`):
``tokens/`` (one folder per token cache), ``tokenizers/`` (trained SentencePiece models) and
``corpora/`` (the optional corpora that ``capscale data fetch`` downloads).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path

from capscale.cache import ENV_VAR, cache_root  # noqa: F401  (re-exported)


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe, human-readable rendering of a spec string."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[-limit:].strip("-.")
    return s or "x"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock), so that two processes (e.g. the ranks of a
    torchrun job) do not build the same cache at once: the second waits, then finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic renames still keep caches whole
        yield
        return
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
