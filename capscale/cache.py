"""Where capscale keeps what it computes once (VQ code books, the grids' MSE-optimal scales α*,
token caches, tokenizers, built-in fits).

The root is, in order: an explicit ``cache_dir`` argument, the ``CAPSCALE_CACHE``
environment variable, or ``~/.cache/capscale``.
"""

from __future__ import annotations

import os
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


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, created if missing."""
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
