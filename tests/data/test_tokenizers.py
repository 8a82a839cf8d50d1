"""Tokenizers: a SentencePiece BPE trained here on real text, model files, the Mistral v1
model from its wheel, and the errors of bad or unreachable specs."""

from __future__ import annotations

import importlib.util
import time

import pytest

from capscale.data import tokenizers as tk
from capscale.data.sources import parse_source
from capscale.errors import CapscaleError

sentencepiece = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def small_model(wiki_docs) -> bytes:
    return tk.train_sentencepiece(tk.training_lines(wiki_docs[:20]), 512)


def test_trained_bpe_has_llama2_layout(small_model):
    tok = tk.SentencePieceTokenizer(small_model, "train:spm:512")
    sp = tok._sp
    assert tok.vocab_size == 512
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "<0x00>"]
    assert [sp.id_to_piece(3 + b) for b in (10, 65, 255)] == ["<0x0A>", "<0x41>", "<0xFF>"]
    digits = [p for p in sp.encode("in 1905 and 31415926", out_type=str) if p.strip("▁").isdigit()]
    assert digits == list("1905") + list("31415926")  # split_digits: one piece per digit


@pytest.mark.parametrize("text", [
    "Plain words.",
    "two  spaces, a\ttab,\nand a newline",
    "unseen script: 日本語 and an emoji 😀 survive byte fallback",
])
def test_round_trip_is_exact(small_model, text):
    tok = tk.SentencePieceTokenizer(small_model, "train:spm:512")
    ids = tok.encode(text)
    assert tok.eos_id not in ids and tok.bos_id not in ids  # the cache adds EOS itself
    assert tok.decode(ids) == text


def test_training_is_deterministic(wiki_docs, small_model):
    again = tk.train_sentencepiece(tk.training_lines(wiki_docs[:20]), 512)
    assert again == small_model
    other = tk.train_sentencepiece(tk.training_lines(wiki_docs[20:40]), 512)
    assert other != small_model


def test_training_lines_cap():
    lines = list(tk.training_lines(["ab\ncd\n\nef", "gh"], max_bytes=9))
    assert lines == ["ab", "cd", "ef"]  # 3 bytes each with the newline; "gh" would pass 9


def test_train_spec_trains_once_then_reads_the_cache(tmp_path, jsonl_corpus, monkeypatch):
    source = parse_source(str(jsonl_corpus))
    tok = tk.load_tokenizer("train:spm:400", source=source, cache_dir=tmp_path)
    path = tk.trained_spm_path(tk.parse_tokenizer_spec("train:spm:400"), source, tmp_path)
    assert path.is_file() and path.read_bytes() == tok.model

    def refuse(*a, **k):
        raise AssertionError("trained again")

    monkeypatch.setattr(tk, "train_sentencepiece", refuse)
    again = tk.load_tokenizer("train:spm:400", source=source, cache_dir=tmp_path)
    assert again.model == tok.model
    # spm:PATH on the same file gives the same ids
    by_path = tk.load_tokenizer(f"spm:{path}")
    assert by_path.encode("Anarchism and autism.") == tok.encode("Anarchism and autism.")


def test_vocabulary_too_large_for_the_text_fails_clearly():
    with pytest.raises(CapscaleError, match="SentencePiece training with vocabulary 5000 failed"):
        tk.train_sentencepiece(["a tiny corpus of a few words"] * 3, 5000)


@pytest.mark.parametrize("spec, match", [
    ("train:spm:abc", "train:spm:VOCAB"),
    ("train:bpe:4096", "train:spm:VOCAB"),
    ("train:spm:100", "between 260"),
    ("builtin:llama-2", "builtin:mistral-v1"),
    ("gpt-2", "unknown tokenizer"),
    ("spm:", "unknown tokenizer"),
])
def test_bad_specs(spec, match):
    with pytest.raises(CapscaleError, match=match):
        tk.parse_tokenizer_spec(spec)


def test_missing_model_file(tmp_path):
    with pytest.raises(CapscaleError, match="no SentencePiece model file"):
        tk.load_tokenizer(f"spm:{tmp_path / 'none.model'}")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(CapscaleError, match="not a SentencePiece model"):
        tk.load_tokenizer(f"spm:{junk}")


@pytest.mark.skipif(importlib.util.find_spec("mistral_common") is None,
                    reason="mistral-common is not installed (pip install --no-deps mistral-common)")
def test_mistral_v1_from_the_wheel():
    tok = tk.load_tokenizer("builtin:mistral-v1")
    assert (tok.vocab_size, tok.bos_id, tok.eos_id) == (32000, 1, 2)
    assert tk.known_vocab_size("builtin:mistral-v1") == tok.vocab_size  # the table agrees
    assert tok._sp.id_to_piece(3) == "<0x00>"
    # ids measured with the model file of mistral-common 1.13.1
    assert tok.encode("Hello world.") == [22557, 1526, 28723]


def test_known_vocab_sizes_are_the_loaded_tokenizers_and_the_sweep_cost_uses_them(
        tmp_path, jsonl_corpus):
    """One vocabulary table: the sweep's cost estimate reads the tokenizers' own."""
    from capscale.sweep import vocab_size_of

    tok = tk.load_tokenizer("train:spm:400", source=parse_source(str(jsonl_corpus)),
                            cache_dir=tmp_path)
    assert tk.known_vocab_size("train:spm:400") == tok.vocab_size == 400
    for spec in ("train:spm:400", "builtin:mistral-v1", "hf:gpt2", "hf:meta-llama/Llama-2-7b-hf"):
        assert vocab_size_of(spec)[0] == tk.known_vocab_size(spec)
    assert tk.known_vocab_size("hf:someone/else") is None
    assert vocab_size_of("hf:someone/else")[1].startswith("assumed")


def test_mistral_v1_absent_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mistral_common" else real(name, *a))
    with pytest.raises(CapscaleError, match="pip install --no-deps mistral-common"):
        tk.load_tokenizer("builtin:mistral-v1")


def test_hub_tokenizer_offline_fails_at_once():
    t0 = time.perf_counter()
    with pytest.raises(CapscaleError, match="transformers|HF_HUB_OFFLINE"):
        tk.load_tokenizer("hf:meta-llama/Llama-2-7b-hf")
    assert time.perf_counter() - t0 < 5
