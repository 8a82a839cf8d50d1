"""Hub sources and tokenizers fail at once, with a message that says what is missing, when the
machine is offline or the packages are absent. No test here opens a connection to the hub."""

from __future__ import annotations

import importlib.util
import socket
import time

import pytest

from capscale.data import online, prepare_tokens
from capscale.data.sources import parse_source
from capscale.errors import CapscaleError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the socket goes


@pytest.mark.parametrize("spec", ["c4", "hf:roneneldan/TinyStories", "hf:allenai/c4:en:validation"])
def test_offline_flag_stops_hub_sources_at_once(spec, cache):
    t0 = time.perf_counter()
    with pytest.raises(CapscaleError, match="HF_HUB_OFFLINE=1 says this machine is offline"):
        prepare_tokens(spec, "train:spm:4096", cache_dir=cache, max_tokens=10_000)
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("flag", ["HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"])
def test_other_offline_flags(flag, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv(flag, "true")
    with pytest.raises(CapscaleError, match=flag):
        list(parse_source("c4").documents())


def test_unreachable_hub_is_reported_quickly(monkeypatch, cache):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    port = closed_port()
    monkeypatch.setattr(online, "hub_address", lambda: ("127.0.0.1", port))
    t0 = time.perf_counter()
    with pytest.raises(CapscaleError, match=f"127.0.0.1:{port} cannot be reached"):
        prepare_tokens("c4", "train:spm:4096", cache_dir=cache, max_tokens=10_000)
    assert time.perf_counter() - t0 < 5


def test_missing_datasets_package_is_named(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(online, "probe", lambda host, port, timeout=3.0: None)  # "online"
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "datasets" else real(name, *a))
    with pytest.raises(CapscaleError, match=r"needs the 'datasets' package.*capscale\[hf\]"):
        list(parse_source("hf:allenai/c4:en").documents())


def test_probe_against_local_sockets():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert online.probe("127.0.0.1", server.getsockname()[1], timeout=2) is None
    why = online.probe("127.0.0.1", closed_port(), timeout=2)
    assert why is not None and "refused" in why.lower()


def test_proxy_and_endpoint_decide_the_probe(monkeypatch):
    for var in ("HTTPS_PROXY", "https_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    assert online.hub_address() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert online.hub_address() == ("hf-mirror.example", 8443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert online.hub_address() == ("proxy.internal", 3128)


def test_a_hub_cache_made_online_is_read_offline(wiki_docs, cache, monkeypatch):
    """Tokens streamed once (here: a stand-in for the hub) are reused offline: the cache key
    needs no network, and neither does opening the cache."""
    from capscale.data.sources import HFSource

    with monkeypatch.context() as m:
        m.setattr(HFSource, "check_available", lambda self: None)
        m.setattr(HFSource, "documents", lambda self: iter(wiki_docs[:24]))
        first = prepare_tokens("hf:someone/corpus", "train:spm:512", cache_dir=cache,
                               max_tokens=200_000, progress=False)
    assert first.built and first.meta["source"]["spec"] == "hf:someone/corpus"
    # offline now (HF_HUB_OFFLINE=1 is set for every test), and the probe must not run
    monkeypatch.setattr(online, "probe", lambda *a, **k: pytest.fail("network probed"))
    again = prepare_tokens("hf:someone/corpus", "train:spm:512", cache_dir=cache,
                           max_tokens=200_000, progress=False)
    assert not again.built and again.path == first.path
    with pytest.raises(CapscaleError, match="offline"):  # a different cap is a new download
        prepare_tokens("hf:someone/corpus", "train:spm:512", cache_dir=cache,
                       max_tokens=100_000, progress=False)
