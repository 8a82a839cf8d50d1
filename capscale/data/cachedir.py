"""Where the data layer keeps what it makes: token caches, trained tokenizers, fetched corpora.

The root is, in order: the ``cache_dir`` argument, the ``CAPSCALE_CACHE`` environment
variable, or ``~/.cache/capscale``. Below it:
``tokens/`` (one folder per token cache), ``tokenizers/`` (trained SentencePiece models) and
``corpora/`` (the optional corpora that ``capscale data fetch`` downloads).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "CAPSCALE_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The capscale cache root (not created here)."""
    if cache_dir is not None and str(cache_dir) != "":
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "capscale"


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
