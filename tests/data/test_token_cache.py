"""The token cache: contents against a direct tokenization, held-out documents, cache hits and
misses, determinism, atomicity (an interrupted or killed build leaves nothing readable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from capscale.data import open_token_cache, prepare_tokens
from capscale.data import tokenizers as tk
from capscale.data import tokens as tokens_mod
from capscale.data.sources import FileSource
from capscale.errors import CapscaleError

pytest.importorskip("sentencepiece")
REPO = Path(__file__).resolve().parents[2]
TOK = "train:spm:512"


def split_at(arr: np.ndarray, eos: int) -> list[list[int]]:
    """The documents of a split: runs of ids each ended by EOS."""
    ends = np.flatnonzero(np.asarray(arr) == eos)
    assert len(ends) and ends[-1] == len(arr) - 1, "every document ends with EOS"
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [np.asarray(arr[s:e]).tolist() for s, e in zip(starts, ends)]


def test_contents_match_a_direct_tokenization(jsonl_corpus, wiki_docs, cache):
    td = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, val_fraction=0.1, progress=False)
    assert td.built and td.train.dtype == np.uint16 and isinstance(td.train, np.memmap)
    assert (td.vocab_size, td.bos_id, td.eos_id) == (512, 1, 2)
    # the obvious slow version: encode each document on its own with the same model
    sp = tk.SentencePieceTokenizer((td.path / "tokenizer.model").read_bytes(), TOK)
    expected = [sp.encode(doc) for doc in wiki_docs[:24]]
    train, val = split_at(td.train, td.eos_id), split_at(td.val, td.eos_id)
    assert len(train) + len(val) == 24 and len(val) >= 1
    # the splits partition the documents and keep the source's order
    it_train, it_val = iter(train), iter(val)
    nxt_t, nxt_v = next(it_train, None), next(it_val, None)
    for doc in expected:
        if doc == nxt_v:
            nxt_v = next(it_val, None)
        else:
            assert doc == nxt_t
            nxt_t = next(it_train, None)
    assert nxt_t is None and nxt_v is None
    m = td.meta
    total = sum(len(d) + 1 for d in expected)
    assert m["tokens"] == {"total": total, "train": len(td.train), "val": len(td.val)}
    assert len(td.val) >= 0.1 * total > len(td.val) - max(len(d) + 1 for d in val)
    assert m["documents"] == {"total": 24, "train": len(train), "val": len(val)}
    assert m["text_bytes"]["train"] + m["text_bytes"]["val"] == sum(
        len(d.encode()) for d in wiki_docs[:24])
    td.verify()
    assert td.decode(td.encode("The albedo of snow.")) == "The albedo of snow."


def test_hit_touches_neither_text_nor_tokenizer(jsonl_corpus, cache, monkeypatch):
    first = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)

    def refuse(*a, **k):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(FileSource, "documents", refuse)
    monkeypatch.setattr(tk, "train_sentencepiece", refuse)
    again = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    assert not again.built and again.path == first.path and again.key == first.key
    assert np.array_equal(again.train, first.train)


def test_key_follows_options_and_file_contents(jsonl_corpus, cache):
    a = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    b = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, val_fraction=0.2, progress=False)
    c = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, split_seed=1, progress=False)
    assert len({a.key, b.key, c.key}) == 3 and b.built and c.built
    assert len(b.val) > len(a.val)
    with open(jsonl_corpus, "a") as f:
        f.write(json.dumps({"text": "One more document about albedo and anarchism."}) + "\n")
    d = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    assert d.built and d.key != a.key and d.meta["documents"]["total"] == 25


def test_same_inputs_same_bytes_anywhere(jsonl_corpus, tmp_path):
    a = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=tmp_path / "a", progress=False)
    b = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=tmp_path / "b", progress=False)
    assert a.key == b.key and a.meta["sha256"] == b.meta["sha256"]
    assert (a.path / "tokenizer.model").read_bytes() == (b.path / "tokenizer.model").read_bytes()


def test_env_var_sets_the_cache_root(jsonl_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSCALE_CACHE", str(tmp_path / "from-env"))
    td = prepare_tokens(str(jsonl_corpus), TOK, progress=False)
    assert td.path.parent == tmp_path / "from-env" / "tokens"


def test_val_tokens_and_max_tokens(jsonl_corpus, wiki_docs, cache):
    td = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, val_tokens=5000, progress=False)
    assert len(td.val) >= 5000 and td.meta["split"]["val_tokens_target"] == 5000
    ends = np.cumsum([len(td.encode(d)) + 1 for d in wiki_docs[:24]])
    cap = int(ends[4]) - 7  # reached inside the fifth document, which is kept whole
    capped = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, max_tokens=cap,
                            progress=False)
    assert capped.meta["capped"] and capped.meta["tokens"]["total"] == ends[4]
    assert capped.meta["documents"]["total"] == 5


def test_bad_splits_and_inputs(tmp_path, wiki_docs, cache):
    model = tmp_path / "wiki512.model"
    model.write_bytes(tk.train_sentencepiece(tk.training_lines(wiki_docs[:20]), 512))
    one = tmp_path / "one.txt"
    one.write_text("A single document without blank lines.\nStill the same one.\n")
    with pytest.raises(CapscaleError, match="needs at least 2"):
        prepare_tokens(str(one), f"spm:{model}", cache_dir=cache, progress=False)
    two = tmp_path / "two.txt"
    two.write_text("first document here\n\nsecond document here\n")
    with pytest.raises(CapscaleError, match="would take all 2 documents"):
        prepare_tokens(str(two), f"spm:{model}", cache_dir=cache, val_fraction=0.9,
                       progress=False)
    with pytest.raises(CapscaleError, match="val_fraction"):
        prepare_tokens(str(two), cache_dir=cache, val_fraction=0.0)
    with pytest.raises(CapscaleError, match="max_tokens"):
        prepare_tokens("c4", "hf:gpt2", cache_dir=cache)
    with pytest.raises(CapscaleError, match="no such file"):
        prepare_tokens(str(tmp_path / "missing.jsonl"), cache_dir=cache)
    # no failed build left a cache (or a temporary folder) behind, only lock files
    assert all(p.name.endswith(".lock") for p in (cache / "tokens").iterdir())


def test_interrupted_build_leaves_nothing(jsonl_corpus, cache, monkeypatch):
    real = tokens_mod._copy_documents

    def fail_on_val(src, offsets, mask, out):
        if out.name == "val.bin":
            raise KeyboardInterrupt
        return real(src, offsets, mask, out)

    monkeypatch.setattr(tokens_mod, "_copy_documents", fail_on_val)
    with pytest.raises(KeyboardInterrupt):
        prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    assert list((cache / "tokens").iterdir()) == [next((cache / "tokens").glob(".*.lock"))]
    monkeypatch.setattr(tokens_mod, "_copy_documents", real)
    td = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    assert td.built
    td.verify()


def test_killed_build_is_never_read(jsonl_corpus, cache):
    """SIGKILL in the middle of writing val.bin: no cache appears; the next build sweeps the
    half-written folder and makes a whole one."""
    script = textwrap.dedent(f"""
        import os, signal
        import capscale.data.tokens as T
        real = T._copy_documents
        def die(src, offsets, mask, out):
            if out.name == "val.bin":
                with open(out, "wb") as f:
                    f.write(b"half")
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, offsets, mask, out)
        T._copy_documents = die
        T.prepare_tokens({str(jsonl_corpus)!r}, {TOK!r}, cache_dir={str(cache)!r}, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    tokens_dir = cache / "tokens"
    assert not [p for p in tokens_dir.iterdir() if not p.name.startswith(".")]
    (half,) = tokens_dir.glob(".*.tmp-*")
    assert (half / "train.bin").is_file() and not (half / "meta.json").exists()
    with pytest.raises(CapscaleError):
        open_token_cache(half)
    td = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    assert td.built and not half.exists()
    td.verify()


def test_damaged_cache_is_refused(jsonl_corpus, cache):
    td = prepare_tokens(str(jsonl_corpus), TOK, cache_dir=cache, progress=False)
    with open(td.path / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(CapscaleError, match="val.bin is missing or has the wrong size"):
        open_token_cache(td.path)


def test_default_builtin_corpus(wiki_docs, tmp_path_factory):
    td = prepare_tokens(cache_dir=tmp_path_factory.mktemp("wiki"), progress=False)
    m = td.meta
    assert m["source"]["spec"] == "builtin:wiki" and m["tokenizer"]["spec"] == "train:spm:4096"
    assert td.vocab_size == 4096 and td.train.dtype == np.uint16
    assert m["documents"]["total"] == 106 and m["documents"]["val"] >= 3
    assert 7e5 < m["tokens"]["total"] < 1e6
    assert 0.05 <= m["tokens"]["val"] / m["tokens"]["total"] < 0.1
    # whole articles: every validation document is one of the articles, verbatim
    val_docs = [td.decode(d) for d in split_at(td.val, td.eos_id)]
    assert set(val_docs) <= set(wiki_docs)
