"""Atomic file writes: nothing capscale writes is ever left half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so readers see the old file or the whole new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


_CAUSES = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file", errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it exists and is not a folder", errno.ENAMETOOLONG: "the name is too long",
}


def describe_write_error(e: BaseException, where: str | os.PathLike | None = None) -> str:
    """Why a read or write failed, in words: the path and the cause (full, read-only, not a
    folder, ...). Libraries that hide the errno (torch reports a full disk as "unexpected
    pos") are recognised by the free space left under ``where``."""
    if isinstance(e, OSError) and e.errno in _CAUSES:
        path = e.filename or where
        return f"{path}: {_CAUSES[e.errno]}" if path else _CAUSES[e.errno]
    if where is not None:
        try:
            if shutil.disk_usage(_existing(Path(where))).free < 1 << 20:
                return f"{where}: the disk is full"
        except OSError:
            pass
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, write)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False) + "\n")


def write_table(df, path: str | os.PathLike) -> Path:
    """Write a DataFrame as CSV or Parquet, chosen by the file suffix, atomically."""
    suffix = Path(path).suffix.lower()
    if suffix == ".parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))
    if suffix in (".csv", ""):
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False))
    if suffix in (".jsonl", ".ndjson"):
        return atomic_write(path, lambda tmp: df.to_json(tmp, orient="records", lines=True))
    from capscale.errors import CapscaleError

    raise CapscaleError(f"cannot write table {path}: use a .csv, .parquet or .jsonl suffix")
