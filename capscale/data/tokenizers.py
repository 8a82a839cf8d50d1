"""Tokenizers named by a spec string.

    train:spm:VOCAB      a SentencePiece BPE trained here on the selected corpus (default
                         train:spm:4096); Llama-2's layout: byte fallback, digits split,
                         unk/bos/eos = 0/1/2; deterministic, cached under <cache>/tokenizers/
    spm:PATH             a SentencePiece model file
    builtin:mistral-v1   the Mistral v1 SentencePiece BPE (32,000 pieces, Llama-2's layout)
                         inside the mistral-common wheel; install it with
                         `pip install --no-deps mistral-common` (its dependencies are not needed)
    hf:NAME              a Hugging Face tokenizer (e.g. hf:gpt2, hf:meta-llama/Llama-2-7b-hf, or
                         a local folder); needs transformers and, unless cached, the network

Every tokenizer encodes text without adding BOS/EOS; the token cache puts EOS after each
document itself.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from capscale.data.cachedir import cache_root, file_lock, slug
from capscale.data.online import hub_address, offline_flag, probe
from capscale.errors import CapscaleError
from capscale.io import atomic_write_bytes

TOKENIZER_FORMS = "train:spm:VOCAB (e.g. train:spm:4096), spm:PATH, builtin:mistral-v1, hf:NAME"

# The trainer settings of Llama-2's tokenizer (BPE), except a character coverage of 0.9995
# (SentencePiece's default) instead of 0.99995, so that small vocabularies are not spent on rare
# characters that byte fallback covers anyway. A fixed thread count makes training
# deterministic: SentencePiece's result depends on how many threads count the pairs.
SPM_TRAINER_OPTIONS: dict = {
    "model_type": "bpe",
    "character_coverage": 0.9995,  # rarer characters fall back to bytes
    "byte_fallback": True,
    "split_digits": True,
    "allow_whitespace_only_pieces": True,
    "normalization_rule_name": "identity",
    "remove_extra_whitespaces": False,
    "add_dummy_prefix": True,
    "unk_id": 0,
    "bos_id": 1,
    "eos_id": 2,
    "pad_id": -1,
    "max_sentence_length": 1 << 16,
    "num_threads": 4,
}
SPM_TRAIN_MAX_BYTES = 100_000_000  # training text is the corpus' first 100 MB (all of builtins)
SPM_MIN_VOCAB = 260  # 3 special pieces + 256 byte pieces + at least one more


class Tokenizer:
    """Text <-> token ids. Attributes: spec, kind, vocab_size, bos_id (or None), eos_id."""

    spec: str
    kind: str
    vocab_size: int
    bos_id: int | None
    eos_id: int

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, vocab_size={self.vocab_size})"


class SentencePieceTokenizer(Tokenizer):
    kind = "spm"

    def __init__(self, model: bytes, spec: str):
        import sentencepiece as spm

        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model)
        except Exception as e:
            raise CapscaleError(f"tokenizer '{spec}' is not a SentencePiece model: {e}") from e
        self.model = model
        self.spec = spec
        self.vocab_size = int(self._sp.get_piece_size())
        self.bos_id = int(self._sp.bos_id()) if self._sp.bos_id() >= 0 else None
        if self._sp.eos_id() < 0:
            raise CapscaleError(f"SentencePiece model '{spec}' has no EOS piece to end documents")
        self.eos_id = int(self._sp.eos_id())

    @classmethod
    def from_file(cls, path: str | os.PathLike, spec: str) -> SentencePieceTokenizer:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CapscaleError(f"tokenizer '{spec}': no SentencePiece model file at {path}")
        return cls(path.read_bytes(), spec)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])


class HFTokenizer(Tokenizer):
    kind = "hf"

    def __init__(self, tok, spec: str):
        self._tok = tok
        self.spec = spec
        self.vocab_size = len(tok)
        self.bos_id = tok.bos_token_id
        if tok.eos_token_id is None:
            raise CapscaleError(f"tokenizer '{spec}' has no EOS token to end documents")
        self.eos_id = int(tok.eos_token_id)
        tok.model_max_length = sys.maxsize  # documents are long; windows are cut later

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tok(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


# --- specs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerSpec:
    kind: str  # train-spm | spm | builtin | hf
    arg: str
    spec: str


# Vocabulary sizes known without loading the tokenizer (the sweep's cost estimate plans with
# them); a test checks them against the loaded tokenizers where those are installed.
MISTRAL_V1_VOCAB = 32000
KNOWN_VOCAB = {"builtin:mistral-v1": MISTRAL_V1_VOCAB, "hf:gpt2": 50257}


def known_vocab_size(spec: str) -> int | None:
    """The vocabulary size of a tokenizer spec without loading it, or None when only loading
    it would tell: ``train:spm:N`` has N, the builtin and a few Hugging Face names are known,
    and Llama-2's tokenizers have 32,000 pieces."""
    spec = spec.strip()
    if spec in KNOWN_VOCAB:
        return KNOWN_VOCAB[spec]
    head, _, rest = spec.partition(":")
    algo, _, vocab = rest.partition(":")
    if head == "train" and algo == "spm" and vocab.isdigit():
        return int(vocab)
    if "llama-2" in spec.lower():
        return 32000
    return None


def parse_tokenizer_spec(spec: str) -> TokenizerSpec:
    spec = spec.strip()
    head, _, rest = spec.partition(":")
    if head == "train":
        algo, _, vocab = rest.partition(":")
        if algo != "spm" or not vocab.isdigit():
            raise CapscaleError(f"bad tokenizer '{spec}': expected train:spm:VOCAB, e.g. train:spm:4096")
        if not SPM_MIN_VOCAB <= int(vocab) <= 1 << 20:
            raise CapscaleError(f"bad tokenizer '{spec}': the vocabulary must be between "
                                f"{SPM_MIN_VOCAB} and {1 << 20} (256 byte pieces come first)")
        return TokenizerSpec("train-spm", str(int(vocab)), f"train:spm:{int(vocab)}")
    if head == "spm" and rest:
        return TokenizerSpec("spm", rest, spec)
    if head == "builtin":
        if rest != "mistral-v1":
            raise CapscaleError(f"unknown builtin tokenizer '{spec}': expected builtin:mistral-v1")
        return TokenizerSpec("builtin", rest, spec)
    if head == "hf" and rest:
        return TokenizerSpec("hf", rest, spec)
    raise CapscaleError(f"unknown tokenizer '{spec}': expected {TOKENIZER_FORMS}")


def mistral_v1_path() -> Path:
    """The Mistral v1 SentencePiece model inside mistral-common, found without importing it."""
    spec = importlib.util.find_spec("mistral_common")
    if spec is None or not spec.submodule_search_locations:
        raise CapscaleError(
            "tokenizer builtin:mistral-v1 is the SentencePiece model shipped inside the "
            "mistral-common wheel, which is not installed: "
            "pip install --no-deps mistral-common==1.13.1 (its own dependencies are not needed)"
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "tokenizer.model.v1"
    if not path.is_file():
        raise CapscaleError(f"the installed mistral-common has no {path}; install version 1.13.1")
    return path


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _spm_recipe(ts: TokenizerSpec, source) -> dict:
    return {
        "train_spm": int(ts.arg),
        "source": source.fingerprint(),
        "options": SPM_TRAINER_OPTIONS,
        "max_bytes": SPM_TRAIN_MAX_BYTES,
        "sentencepiece": importlib.metadata.version("sentencepiece"),
    }


def tokenizer_identity(ts: TokenizerSpec, source=None) -> dict:
    """What determines the tokenizer's ids, for cache keys; no training and no network."""
    if ts.kind == "train-spm":
        if source is None:
            raise CapscaleError(f"tokenizer '{ts.spec}' is trained on a data source; give one")
        return {"spec": ts.spec, **_spm_recipe(ts, source)}
    if ts.kind == "spm":
        path = Path(ts.arg).expanduser()
        if not path.is_file():
            raise CapscaleError(f"tokenizer '{ts.spec}': no SentencePiece model file at {path}")
        return {"spec": ts.spec, "sha256": _sha256_file(path)}
    if ts.kind == "builtin":
        return {"spec": ts.spec, "sha256": _sha256_file(mistral_v1_path())}
    return {"spec": ts.spec, "hf": ts.arg}


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --- training ------------------------------------------------------------------------------


def training_lines(documents: Iterable[str], max_bytes: int = SPM_TRAIN_MAX_BYTES) -> Iterator[str]:
    """Non-empty lines of the documents, in order, up to ``max_bytes`` of UTF-8."""
    total = 0
    for doc in documents:
        for line in doc.split("\n"):
            if line.strip():
                total += len(line.encode("utf-8")) + 1
                if total > max_bytes:
                    return
                yield line


def train_sentencepiece(lines: Iterable[str], vocab_size: int) -> bytes:
    """A SentencePiece BPE model (serialized) trained on ``lines`` with SPM_TRAINER_OPTIONS."""
    import sentencepiece as spm

    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=buf,
                                       vocab_size=vocab_size, minloglevel=2, **SPM_TRAINER_OPTIONS)
    except RuntimeError as e:
        raise CapscaleError(f"SentencePiece training with vocabulary {vocab_size} failed: {e} "
                            "(choose another vocabulary size, or give more text)") from e
    return buf.getvalue()


def trained_spm_path(ts: TokenizerSpec, source, cache_dir=None) -> Path:
    name = f"{slug(source.spec)}-spm-bpe{ts.arg}-{digest(_spm_recipe(ts, source))[:16]}.model"
    return cache_root(cache_dir) / "tokenizers" / name


def _train_spm_tokenizer(ts: TokenizerSpec, source, cache_dir, progress: bool) -> Tokenizer:
    path = trained_spm_path(ts, source, cache_dir)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if not path.is_file():
            source.check_available()
            if progress:
                print(f"capscale: training a SentencePiece BPE ({ts.arg} pieces) on {source.spec}",
                      file=sys.stderr)
            model = train_sentencepiece(training_lines(source.documents()), int(ts.arg))
            atomic_write_bytes(path, model)
    return SentencePieceTokenizer.from_file(path, ts.spec)


def _load_hf_tokenizer(ts: TokenizerSpec) -> Tokenizer:
    name = ts.arg
    local = Path(name).expanduser().is_dir()
    why_offline = None
    if not local:
        flag = offline_flag()
        why_offline = f"{flag} is set" if flag else probe(*hub_address())
    if importlib.util.find_spec("transformers") is None:
        extra = f"; note the hub is also unreachable here ({why_offline})" if why_offline else ""
        raise CapscaleError(f"tokenizer '{ts.spec}' needs the transformers package, which is not "
                            f"installed: pip install 'capscale[hf]'{extra}")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=why_offline is not None)
    except Exception as e:
        if why_offline is not None:
            raise CapscaleError(
                f"tokenizer '{ts.spec}' is not in the local Hugging Face cache and the hub cannot "
                f"be reached ({why_offline}); use train:spm:VOCAB or builtin:mistral-v1 offline"
            ) from e
        raise CapscaleError(f"cannot load tokenizer '{ts.spec}': {e}") from e
    return HFTokenizer(tok, ts.spec)


def load_tokenizer(spec: str, *, source=None, cache_dir: str | os.PathLike | None = None,
                   progress: bool = False) -> Tokenizer:
    """The tokenizer a spec names; ``train:spm:VOCAB`` trains on ``source`` (once, cached)."""
    ts = parse_tokenizer_spec(spec)
    if ts.kind == "train-spm":
        if source is None:
            raise CapscaleError(f"tokenizer '{ts.spec}' is trained on a data source; give one")
        return _train_spm_tokenizer(ts, source, cache_dir, progress)
    if ts.kind == "spm":
        return SentencePieceTokenizer.from_file(ts.arg, ts.spec)
    if ts.kind == "builtin":
        return SentencePieceTokenizer.from_file(mistral_v1_path(), ts.spec)
    return _load_hf_tokenizer(ts)
