"""Shared fixtures for the data-layer tests: real English text from the gensim package (the
project ships no third-party text), written to local files at test time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def wiki_docs() -> list[str]:
    pytest.importorskip("gensim")
    from capscale.data.builtin import wiki_articles

    return [text for _title, text in wiki_articles()]


@pytest.fixture
def jsonl_corpus(tmp_path: Path, wiki_docs: list[str]) -> Path:
    """24 Wikipedia articles, one JSON object per line."""
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(wiki_docs[:24]):
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch, tmp_path: Path):
    """No test reads or writes the user's cache, and none goes near the hub."""
    monkeypatch.setenv("CAPSCALE_CACHE", str(tmp_path / "env-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
