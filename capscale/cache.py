"""Where capscale keeps what it computes once (VQ code books, token caches): $CAPSCALE_CACHE,
else ~/.cache/capscale."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("CAPSCALE_CACHE") or Path.home() / ".cache" / "capscale")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
