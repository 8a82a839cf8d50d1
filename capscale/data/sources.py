"""Text sources named by a spec string; each yields documents (plain strings).

Specs:
    builtin:wiki | builtin:lee | builtin:austen | builtin:shakespeare   (see capscale.data.builtin)
    c4                                  allenai/c4, config en, split train, streamed
    hf:NAME[:CONFIG][:SPLIT]            any Hugging Face dataset, streamed (split train by default;
                                        hf:NAME::SPLIT for a split without a config); NAME may
                                        be a dataset folder on disk, which needs no network
    PATH                                a .txt / .jsonl / .parquet file (.txt and .jsonl may be
                                        .gz), a directory of them (recursive), or a glob
    SPEC+SPEC                           documents of the first, then of the second, ...

In a .txt file a document is a block of text between blank lines; in .jsonl one line holds
one document in its ``text`` field; in .parquet one row does, in its ``text`` column (the
field or column name is the ``text_field`` option).
"""

from __future__ import annotations

import glob as globlib
import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from capscale.data.builtin import BUILTINS
from capscale.data.cachedir import cache_root
from capscale.data.online import require_online, require_package
from capscale.errors import CapscaleError

FILE_SUFFIXES = (".txt", ".txt.gz", ".jsonl", ".jsonl.gz", ".parquet")
SOURCE_FORMS = ("builtin:wiki, builtin:lee, builtin:austen, builtin:shakespeare, c4, "
                "hf:NAME[:CONFIG][:SPLIT], or a .txt/.jsonl/.parquet file, directory or glob")


class Source:
    """A text source. ``documents()`` yields non-empty strings in a fixed order."""

    spec: str
    streaming: bool = False  # unbounded: a token cap is required

    def documents(self) -> Iterator[str]:
        raise NotImplementedError

    def fingerprint(self) -> dict:
        """What identifies the text, for cache keys; cheap and offline."""
        raise NotImplementedError

    def check_available(self) -> None:
        """Raise a CapscaleError now if ``documents()`` could not deliver."""


@dataclass
class BuiltinSource(Source):
    name: str
    root: Path

    @property
    def spec(self) -> str:
        return f"builtin:{self.name}"

    def documents(self) -> Iterator[str]:
        return BUILTINS[self.name].documents(self.root)

    def check_available(self) -> None:
        BUILTINS[self.name].check(self.root)

    def fingerprint(self) -> dict:
        self.check_available()
        return {"builtin": self.name, **BUILTINS[self.name].fingerprint(self.root)}


@dataclass
class HFSource(Source):
    name: str
    config: str | None
    split: str
    text_field: str
    alias: str | None = None

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return self.local is None  # a hub dataset has no end here; a folder does

    @property
    def spec(self) -> str:
        if self.alias:
            return self.alias
        spec = f"hf:{self.name}"
        if self.split != "train":
            return f"{spec}:{self.config or ''}:{self.split}"
        return f"{spec}:{self.config}" if self.config else spec

    @property
    def local(self) -> Path | None:
        """The folder, when NAME is a dataset folder on disk rather than a hub name."""
        p = Path(self.name).expanduser()
        return p.resolve() if p.is_dir() else None

    def fingerprint(self) -> dict:
        out = {"hf": self.name, "config": self.config, "split": self.split,
               "text_field": self.text_field}
        if self.local is not None:
            out["files"] = _stat_files(sorted(f for f in self.local.rglob("*") if f.is_file()))
        return out

    def check_available(self) -> None:
        if self.local is None:
            require_online(f"data source '{self.spec}'")
        require_package("datasets", f"data source '{self.spec}'",
                        "pip install 'capscale[hf]' (or pip install datasets)")

    def documents(self) -> Iterator[str]:
        self.check_available()
        import datasets

        try:
            ds = datasets.load_dataset(self.name, self.config, split=self.split, streaming=True)
        except Exception as e:  # the hub's errors: unknown name, config or split, auth
            raise CapscaleError(f"cannot open Hugging Face dataset '{self.spec}': {e}") from e
        for i, row in enumerate(ds):
            if self.text_field not in row:
                raise CapscaleError(
                    f"'{self.spec}' row {i} has no field '{self.text_field}' (fields: "
                    f"{', '.join(row)}); choose one with text_field / --text-field"
                )
            text = row[self.text_field]
            if isinstance(text, str) and text.strip():
                yield text


@dataclass
class FileSource(Source):
    pattern: str
    files: list[Path]
    text_field: str = "text"

    @property
    def spec(self) -> str:
        return self.pattern

    def fingerprint(self) -> dict:
        return {"files": _stat_files(self.files), "text_field": self.text_field}

    def check_available(self) -> None:
        for f in self.files:
            if not f.is_file():
                raise CapscaleError(f"data file {f} (from '{self.pattern}') no longer exists")

    def documents(self) -> Iterator[str]:
        for f in self.files:
            name = f.name.lower()
            if name.endswith((".txt", ".txt.gz")):
                yield from _txt_documents(f)
            elif name.endswith((".jsonl", ".jsonl.gz")):
                yield from _jsonl_documents(f, self.text_field)
            else:
                yield from _parquet_documents(f, self.text_field)


def _stat_files(files: list[Path]) -> list:
    """(path, size, modification time) of each file: what identifies local text cheaply."""
    out = []
    for f in files:
        st = f.stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _txt_documents(path: Path) -> Iterator[str]:
    block: list[str] = []
    with _open_text(path) as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                block.append(line.rstrip())
            elif block:
                yield "\n".join(block)
                block = []
    if block:
        yield "\n".join(block)


def _jsonl_documents(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CapscaleError(f"{path} line {lineno} is not valid JSON: {e}") from e
            if not isinstance(obj, dict) or text_field not in obj:
                keys = ", ".join(obj) if isinstance(obj, dict) else type(obj).__name__
                raise CapscaleError(
                    f"{path} line {lineno} has no field '{text_field}' (it has: {keys}); "
                    "choose the text field with text_field / --text-field"
                )
            text = obj[text_field]
            if not isinstance(text, str):
                raise CapscaleError(
                    f"{path} line {lineno}: field '{text_field}' is {type(text).__name__}, not text"
                )
            if text.strip():
                yield text


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    require_package("pyarrow", f"reading {path}",
                    "pip install 'capscale[parquet]' (or pip install pyarrow)")
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise CapscaleError(f"{path} is not a readable Parquet file: {e}") from e
    columns = pf.schema_arrow.names
    if text_field not in columns:
        raise CapscaleError(
            f"{path} has no column '{text_field}' (columns: {', '.join(columns)}); "
            "choose the text column with text_field / --text-field"
        )
    for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if isinstance(text, str) and text.strip():
                yield text


def _resolve_files(spec: str) -> list[Path] | None:
    """The data files a path, directory or glob names; None if it names nothing at all."""
    p = Path(spec).expanduser()
    if p.is_dir():
        found = [f for f in p.rglob("*") if f.is_file() and f.name.lower().endswith(FILE_SUFFIXES)]
        if not found:
            raise CapscaleError(
                f"data directory {p} holds no {'/'.join(FILE_SUFFIXES)} files")
        return sorted(f.resolve() for f in found)
    if p.is_file():
        if not p.name.lower().endswith(FILE_SUFFIXES):
            raise CapscaleError(
                f"data file {p} has an unknown type: expected one of {', '.join(FILE_SUFFIXES)}")
        return [p.resolve()]
    if globlib.has_magic(spec):
        found = [Path(f) for f in globlib.glob(os.path.expanduser(spec), recursive=True)]
        files = [f for f in found if f.is_file() and f.name.lower().endswith(FILE_SUFFIXES)]
        if not files:
            raise CapscaleError(f"the glob '{spec}' matches no {'/'.join(FILE_SUFFIXES)} files")
        return sorted(f.resolve() for f in files)
    return None


@dataclass
class ConcatSource(Source):
    parts: list[Source] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return "+".join(p.spec for p in self.parts)

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return any(p.streaming for p in self.parts)

    def documents(self) -> Iterator[str]:
        for p in self.parts:
            yield from p.documents()

    def fingerprint(self) -> dict:
        return {"concat": [p.fingerprint() for p in self.parts]}

    def check_available(self) -> None:
        for p in self.parts:
            p.check_available()


def parse_source(spec: str, *, text_field: str = "text",
                 cache_dir: str | os.PathLike | None = None) -> Source:
    """The source a spec string names (see the module docstring); cheap, no network."""
    spec = spec.strip()
    if not spec:
        raise CapscaleError(f"empty data source: expected {SOURCE_FORMS}")
    files = None if "+" not in spec else _resolve_files(spec)
    if "+" in spec and files is None:
        return ConcatSource([parse_source(s, text_field=text_field, cache_dir=cache_dir)
                             for s in spec.split("+")])
    if spec.startswith("builtin:"):
        name = spec.split(":", 1)[1]
        if name not in BUILTINS:
            raise CapscaleError(f"unknown builtin corpus '{spec}': expected one of "
                                + ", ".join(f"builtin:{n}" for n in BUILTINS))
        return BuiltinSource(name, cache_root(cache_dir))
    if spec == "c4":
        return HFSource("allenai/c4", "en", "train", text_field, alias="c4")
    if spec.startswith("hf:"):
        parts = spec[3:].split(":")
        if not parts[0] or len(parts) > 3 or not parts[-1]:
            raise CapscaleError(f"bad Hugging Face data source '{spec}': expected "
                                "hf:NAME[:CONFIG][:SPLIT] (hf:NAME::SPLIT for no config), "
                                "e.g. hf:allenai/c4:en:train")
        config = parts[1] if len(parts) > 1 and parts[1] else None
        split = parts[2] if len(parts) > 2 else "train"
        return HFSource(parts[0], config, split, text_field)
    files = files if files is not None else _resolve_files(spec)
    if files is None:
        raise CapscaleError(f"unknown data source '{spec}' (no such file or directory): "
                            f"expected {SOURCE_FORMS}")
    return FileSource(spec, files, text_field)
