"""The Hugging Face code paths, run offline on local folders: a dataset folder read by
``datasets`` (hf:FOLDER) and a tokenizer folder read by ``transformers`` (hf:FOLDER).
Skipped where the `hf` extra is not installed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capscale.data import prepare_tokens
from capscale.data.sources import parse_source


def test_dataset_folder_streams_like_the_files(tmp_path, wiki_docs, cache):
    pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as f:
        for text in wiki_docs[:12]:
            f.write(json.dumps({"text": text, "n": len(text)}) + "\n")
    src = parse_source(f"hf:{folder}")
    assert not src.streaming  # a folder ends; no token cap needed
    assert list(src.documents()) == wiki_docs[:12]
    via_hf = prepare_tokens(f"hf:{folder}", "train:spm:512", cache_dir=cache, progress=False)
    via_file = prepare_tokens(str(folder / "train.jsonl"), "train:spm:512", cache_dir=cache,
                              progress=False)
    assert via_hf.key != via_file.key
    assert np.array_equal(via_hf.train, via_file.train)
    assert np.array_equal(via_hf.val, via_file.val)


def test_tokenizer_folder(tmp_path, wiki_docs, jsonl_corpus, cache):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(wiki_docs[:20], trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    folder = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    td = prepare_tokens(str(jsonl_corpus), f"hf:{folder}", cache_dir=cache, progress=False)
    assert (td.vocab_size, td.bos_id, td.eos_id) == (600, 1, 2)
    assert td.meta["tokenizer"]["kind"] == "hf" and td.meta["tokenizer"]["file"] is None
    first = tok.encode(wiki_docs[0]).ids + [2]
    assert np.asarray(td.train[: len(first)]).tolist() == first or \
        np.asarray(td.val[: len(first)]).tolist() == first
    assert td.decode(td.encode("Albedo, 0.9 for snow.")) == "Albedo, 0.9 for snow."
