"""The token cache: a text source tokenized once into memory-mapped train and validation arrays.

A cache is a folder ``<cache root>/tokens/<source>--<tokenizer>--<key>/`` holding
``train.bin`` and ``val.bin`` (raw uint16 in native byte order, or uint32 for vocabularies
over 65,536), ``meta.json`` and, for SentencePiece tokenizers, ``tokenizer.model``. The key
is a hash of everything that decides the tokens: the source's identity (builtin package
version, file sizes and times, or hub name), the tokenizer's identity (model hash, or the
training recipe of a ``train:spm`` tokenizer), the split options, the token cap and the
format version.

The folder is built under a temporary name beside its final one and renamed into place as the
last step, so a cache that exists is whole; a half-built one (a killed process) is never read,
and is swept up by the next build of the same key.

Documents are joined with the tokenizer's EOS id after each one. The validation split is made
of whole held-out documents: documents are taken in a seeded, version-stable order until they
hold ``val_fraction`` of the tokens (or ``val_tokens``); both splits keep the source's order.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from capscale.data.cachedir import cache_root, file_lock, slug
from capscale.data.rng import stable_permutation
from capscale.data.sources import Source, parse_source
from capscale.data.tokenizers import (
    SentencePieceTokenizer,
    Tokenizer,
    digest,
    load_tokenizer,
    parse_tokenizer_spec,
    tokenizer_identity,
)
from capscale.errors import CapscaleError

FORMAT_VERSION = 1
SPLIT_STREAM = 0x5E1  # keeps the split's random order apart from other uses of the seed
CHUNK_CHARS = 1 << 21  # documents are encoded in batches of about 2 M characters
COPY_TOKENS = 1 << 24


@dataclass
class TokenData:
    """A token cache, opened. ``train`` and ``val`` are read-only ``np.memmap`` arrays."""

    path: Path
    meta: dict
    train: np.memmap
    val: np.memmap
    built: bool = False  # True when this call tokenized the source (a cache miss)
    _tokenizer: Tokenizer | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def vocab_size(self) -> int:
        return int(self.meta["tokenizer"]["vocab_size"])

    @property
    def bos_id(self) -> int | None:
        return self.meta["tokenizer"]["bos_id"]

    @property
    def eos_id(self) -> int:
        return int(self.meta["tokenizer"]["eos_id"])

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer that made the cache (loaded on first use: a hub tokenizer may need the
        network, while the cached tokens never do)."""
        if self._tokenizer is None:
            info = self.meta["tokenizer"]
            if info.get("file"):
                self._tokenizer = SentencePieceTokenizer.from_file(self.path / info["file"],
                                                                   info["spec"])
            else:
                self._tokenizer = load_tokenizer(info["spec"])
        return self._tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode(ids)

    def verify(self) -> None:
        """Re-hash both splits and compare with the metadata (reads every token)."""
        for split in ("train", "val"):
            got = _sha256_array(getattr(self, split))
            if got != self.meta["sha256"][split]:
                raise CapscaleError(f"token cache {self.path}: {split}.bin does not match its hash; "
                                    "delete the folder to rebuild it")

    def summary(self) -> str:
        m = self.meta
        return (f"{m['source']['spec']} x {m['tokenizer']['spec']}: vocab {self.vocab_size}, "
                f"{m['dtype']}, train {m['tokens']['train']:,} tokens "
                f"({m['documents']['train']:,} docs), val {m['tokens']['val']:,} tokens "
                f"({m['documents']['val']:,} docs) in {self.path}")


def _sha256_array(a: np.ndarray) -> str:
    h = hashlib.sha256()
    for i in range(0, len(a), COPY_TOKENS):
        h.update(np.ascontiguousarray(a[i:i + COPY_TOKENS]).tobytes())
    return h.hexdigest()


def open_token_cache(path: str | os.PathLike) -> TokenData:
    """Open a finished token cache folder (as ``prepare_tokens`` returns it)."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise CapscaleError(f"{path} is not a capscale token cache (no readable meta.json)") from e
    if meta.get("format") != FORMAT_VERSION:
        raise CapscaleError(f"token cache {path} has format {meta.get('format')}, this capscale "
                            f"reads {FORMAT_VERSION}; delete it to rebuild")
    dtype = np.dtype(meta["dtype"])
    arrays = {}
    for split in ("train", "val"):
        n = int(meta["tokens"][split])
        f = path / f"{split}.bin"
        if not f.is_file() or f.stat().st_size != n * dtype.itemsize:
            raise CapscaleError(f"token cache {path}: {split}.bin is missing or has the wrong size; "
                                "delete the folder to rebuild it")
        arrays[split] = np.memmap(f, dtype=dtype, mode="r", shape=(n,))
    return TokenData(path, meta, arrays["train"], arrays["val"])


def choose_val_documents(doc_tokens: np.ndarray, target: int, seed: int) -> np.ndarray:
    """Boolean mask of the held-out documents: whole documents in a seeded order until their
    tokens reach ``target``; at least one document on each side."""
    n = len(doc_tokens)
    if n < 2:
        raise CapscaleError(f"the text has {n} document(s); a validation split needs at least 2 "
                            "(in .txt files, documents are separated by blank lines)")
    order = stable_permutation(n, seed, SPLIT_STREAM)
    taken = int(np.searchsorted(np.cumsum(doc_tokens[order]), target)) + 1
    if taken >= n:
        raise CapscaleError(f"a validation split of {target:,} tokens would take all {n} documents "
                            f"({int(doc_tokens.sum()):,} tokens); ask for less validation text")
    mask = np.zeros(n, dtype=bool)
    mask[order[:taken]] = True
    return mask


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        pass


def _chunks(docs: Iterator[str]) -> Iterator[list[str]]:
    chunk, chars = [], 0
    for doc in docs:
        chunk.append(doc)
        chars += len(doc)
        if chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _tokenize(source: Source, tok: Tokenizer, out: Path, dtype: np.dtype,
              max_tokens: int | None, progress: bool) -> dict:
    """Write every document's tokens followed by EOS to ``out``; per-document counts back."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety; the cache does not need it
        progress, tqdm = False, None
    lengths: list[int] = []
    nbytes: list[int] = []
    total = 0
    capped = False
    t0 = time.perf_counter()
    bar = (tqdm(total=max_tokens, unit="tok", unit_scale=True, desc=f"tokenizing {source.spec}",
                file=sys.stderr, mininterval=0.5) if progress else _NoBar())
    with open(out, "wb") as f, bar:
        for chunk in _chunks(iter(source.documents())):
            pieces = []
            for text, ids in zip(chunk, tok.encode_batch(chunk)):
                if not ids:
                    continue
                ids.append(tok.eos_id)
                pieces.append(np.asarray(ids, dtype=dtype))
                lengths.append(len(ids))
                nbytes.append(len(text.encode("utf-8")))
                total += len(ids)
                if max_tokens is not None and total >= max_tokens:
                    capped = True
                    break
            if pieces:
                flat = np.concatenate(pieces)
                flat.tofile(f)
                bar.update(len(flat))
            if capped:
                break
        f.flush()
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    return {"lengths": np.asarray(lengths, dtype=np.int64), "bytes": np.asarray(nbytes, np.int64),
            "seconds": seconds, "capped": capped}


def _copy_documents(src: np.ndarray, offsets: np.ndarray, mask: np.ndarray, out: Path) -> str:
    """Append the documents selected by ``mask`` to ``out`` in order; the sha256 back."""
    h = hashlib.sha256()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    with open(out, "wb") as f:
        for a, b in zip(edges[0::2], edges[1::2]):  # runs of selected documents [a, b)
            for i in range(int(offsets[a]), int(offsets[b]), COPY_TOKENS):
                block = np.ascontiguousarray(src[i:min(i + COPY_TOKENS, int(offsets[b]))])
                h.update(block.tobytes())
                block.tofile(f)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def _build(tmp: Path, key: str, identity: dict, source: Source, tokenizer: str,
           cache_dir, max_tokens: int | None, val_tokens: int | None, val_fraction: float,
           split_seed: int, progress: bool) -> None:
    t0 = time.perf_counter()
    source.check_available()
    tok = load_tokenizer(tokenizer, source=source, cache_dir=cache_dir, progress=progress)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32)
    got = _tokenize(source, tok, tmp / "all.bin", dtype, max_tokens, progress)
    lengths = got["lengths"]
    total = int(lengths.sum())
    target = int(val_tokens) if val_tokens is not None else max(1, math.ceil(val_fraction * total))
    val_mask = choose_val_documents(lengths, target, split_seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    everything = np.memmap(tmp / "all.bin", dtype=dtype, mode="r", shape=(total,))
    sha = {"train": _copy_documents(everything, offsets, ~val_mask, tmp / "train.bin"),
           "val": _copy_documents(everything, offsets, val_mask, tmp / "val.bin")}
    del everything
    os.unlink(tmp / "all.bin")
    model_file = None
    if isinstance(tok, SentencePieceTokenizer):
        model_file = "tokenizer.model"
        (tmp / model_file).write_bytes(tok.model)
    n_val = int(lengths[val_mask].sum())
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"spec": source.spec, "identity": identity["source"]},
        "tokenizer": {"spec": tok.spec, "kind": tok.kind, "identity": identity["tokenizer"],
                      "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "eos_id": tok.eos_id,
                      "file": model_file},
        "dtype": dtype.name,
        "documents": {"total": len(lengths), "train": int((~val_mask).sum()),
                      "val": int(val_mask.sum())},
        "tokens": {"total": total, "train": total - n_val, "val": n_val},
        "text_bytes": {"train": int(got["bytes"][~val_mask].sum()),
                       "val": int(got["bytes"][val_mask].sum())},
        "split": {"rule": "held-out whole documents in a seeded order", "seed": split_seed,
                  "val_fraction": None if val_tokens is not None else val_fraction,
                  "val_tokens_target": target},
        "max_tokens": max_tokens,
        "capped": got["capped"],
        "separator": "eos after each document",
        "sha256": sha,
        "build": {"seconds": round(time.perf_counter() - t0, 3),
                  "read_and_tokenize_seconds": round(got["seconds"], 3),
                  "tokens_per_second": round(total / max(got["seconds"], 1e-9))},
    }
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def prepare_tokens(data: str = "builtin:wiki", tokenizer: str = "train:spm:4096", *,
                   cache_dir: str | os.PathLike | None = None, val_fraction: float = 0.05,
                   val_tokens: int | None = None, max_tokens: int | None = None,
                   text_field: str = "text", split_seed: int = 0,
                   progress: bool = True) -> TokenData:
    """Tokenize ``data`` with ``tokenizer`` once and return the memory-mapped cache.

    data: a source spec (capscale.data.sources); tokenizer: a tokenizer spec
    (capscale.data.tokenizers). val_fraction: share of the tokens held out as whole documents;
    val_tokens, if given, replaces it with a token count. max_tokens caps the tokens read
    (required for streamed hub sources; the cap ends after the document that reaches it).
    text_field: the field / column of .jsonl, .parquet and hub rows. A second call with the
    same arguments reads the cache and touches neither the text nor the tokenizer.
    """
    if val_tokens is None and not 0 < val_fraction < 1:
        raise CapscaleError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    if val_tokens is not None and int(val_tokens) < 1:
        raise CapscaleError(f"val_tokens must be a positive token count, got {val_tokens}")
    if max_tokens is not None and int(max_tokens) < 2:
        raise CapscaleError(f"max_tokens must be a positive token count, got {max_tokens}")
    source = parse_source(data, text_field=text_field, cache_dir=cache_dir)
    if source.streaming and max_tokens is None:
        raise CapscaleError(f"data source '{source.spec}' is streamed from the hub and has no end "
                            "here: give max_tokens (--max-tokens), e.g. the run's tokens plus "
                            "its validation tokens")
    ts = parse_tokenizer_spec(tokenizer)
    identity = {"format": FORMAT_VERSION,
                "source": {"spec": source.spec, **source.fingerprint()},
                "tokenizer": tokenizer_identity(ts, source),
                "split": {"seed": int(split_seed),
                          "val_fraction": None if val_tokens is not None else float(val_fraction),
                          "val_tokens": None if val_tokens is None else int(val_tokens)},
                "max_tokens": None if max_tokens is None else int(max_tokens)}
    key = digest(identity)[:20]
    tokens_dir = cache_root(cache_dir) / "tokens"
    final = tokens_dir / f"{slug(source.spec, 40)}--{slug(ts.spec, 40)}--{key}"
    if final.is_dir():
        return open_token_cache(final)
    tokens_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(tokens_dir / f".{final.name}.lock"):
        if final.is_dir():  # built by another process while this one waited
            return open_token_cache(final)
        for stale in tokens_dir.glob(f".{final.name}.tmp-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=tokens_dir))
        try:
            _build(tmp, key, identity, source, ts.spec, cache_dir,
                   None if max_tokens is None else int(max_tokens),
                   None if val_tokens is None else int(val_tokens), float(val_fraction),
                   int(split_seed), progress)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    td = open_token_cache(final)
    td.built = True
    return td
