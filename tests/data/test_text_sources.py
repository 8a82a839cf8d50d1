"""Text sources: local files written here, the gensim builtins, spec parsing and its errors."""

from __future__ import annotations

import gzip
import json
import struct
import zlib

import pytest

from capscale.data.builtin import r_character_vectors
from capscale.data.sources import ConcatSource, FileSource, HFSource, parse_source
from capscale.errors import CapscaleError


def docs(spec, **kw):
    return list(parse_source(str(spec), **kw).documents())


def test_txt_documents_are_blocks_between_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("First doc, line one.\nline two.\n\n\n  \nSecond doc.\n\nThird   doc  \n")
    assert docs(p) == ["First doc, line one.\nline two.", "Second doc.", "Third   doc"]
    g = tmp_path / "b.txt.gz"
    g.write_bytes(gzip.compress(b"Zipped one.\n\nZipped two."))
    assert docs(g) == ["Zipped one.", "Zipped two."]


def test_jsonl_text_field_and_its_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in
                           [{"text": "one", "body": "uno"}, {"text": " ", "body": "dos"},
                            {"text": "three", "body": "tres"}]) + "\n\n")
    assert docs(p) == ["one", "three"]  # blank documents are skipped
    assert docs(p, text_field="body") == ["uno", "dos", "tres"]
    with pytest.raises(CapscaleError, match=r"line 1 has no field 'content' \(it has: text, body\)"):
        docs(p, text_field="content")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(CapscaleError, match="line 2 is not valid JSON"):
        docs(bad)
    num = tmp_path / "num.jsonl"
    num.write_text('{"text": 3}\n')
    with pytest.raises(CapscaleError, match="is int, not text"):
        docs(num)


def test_parquet_text_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["alpha", None, "beta"], "n": [1, 2, 3]}), p)
    assert docs(p) == ["alpha", "beta"]
    with pytest.raises(CapscaleError, match=r"no column 'body' \(columns: text, n\)"):
        docs(p, text_field="body")


def test_directory_and_glob_are_sorted_and_recursive(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("B")
    (tmp_path / "d" / "a.jsonl").write_text('{"text": "A"}\n')
    (tmp_path / "d" / "sub" / "c.txt").write_text("C")
    (tmp_path / "d" / "notes.md").write_text("ignored")
    assert docs(tmp_path / "d") == ["A", "B", "C"]
    assert docs(f"{tmp_path}/d/**/*.txt") == ["B", "C"]
    src = parse_source(str(tmp_path / "d"))
    assert isinstance(src, FileSource) and len(src.fingerprint()["files"]) == 3


def test_missing_and_unknown_inputs_fail_clearly(tmp_path):
    with pytest.raises(CapscaleError, match="no such file or directory"):
        parse_source(str(tmp_path / "nope.txt"))
    with pytest.raises(CapscaleError, match="matches no"):
        parse_source(f"{tmp_path}/*.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CapscaleError, match="holds no"):
        parse_source(str(tmp_path / "empty"))
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CapscaleError, match="unknown type"):
        parse_source(str(tmp_path / "x.csv"))
    with pytest.raises(CapscaleError, match="builtin:wiki, builtin:lee"):
        parse_source("builtin:tinystories")
    with pytest.raises(CapscaleError, match="hf:NAME"):
        parse_source("hf:")


def test_concatenation(tmp_path):
    (tmp_path / "a.txt").write_text("A1\n\nA2")
    (tmp_path / "b.txt").write_text("B1")
    src = parse_source(f"{tmp_path}/a.txt+{tmp_path}/b.txt")
    assert isinstance(src, ConcatSource)
    assert list(src.documents()) == ["A1", "A2", "B1"]
    plus = tmp_path / "c+d.txt"  # a file whose name has a plus is still a file
    plus.write_text("P")
    assert docs(plus) == ["P"]


@pytest.mark.parametrize("spec, name, config, split, canonical", [
    ("c4", "allenai/c4", "en", "train", "c4"),
    ("hf:roneneldan/TinyStories", "roneneldan/TinyStories", None, "train", "hf:roneneldan/TinyStories"),
    ("hf:allenai/c4:en:validation", "allenai/c4", "en", "validation", "hf:allenai/c4:en:validation"),
    ("hf:wikitext:wikitext-103-raw-v1", "wikitext", "wikitext-103-raw-v1", "train",
     "hf:wikitext:wikitext-103-raw-v1"),
    ("hf:foo/bar::test", "foo/bar", None, "test", "hf:foo/bar::test"),
])
def test_hub_specs_parse_without_network(spec, name, config, split, canonical):
    src = parse_source(spec)
    assert isinstance(src, HFSource) and src.streaming
    assert (src.name, src.config, src.split, src.spec) == (name, config, split, canonical)
    if spec != "c4":
        again = parse_source(src.spec)
        assert (again.name, again.config, again.split) == (name, config, split)


def test_builtin_wiki_is_clean_english_articles(wiki_docs):
    assert len(wiki_docs) == 106  # the real articles of gensim's sample (redirects dropped)
    assert wiki_docs[0].startswith("Anarchism is a political philosophy")
    text = "\n".join(wiki_docs)
    assert 2.5e6 < len(text.encode()) < 3.2e6
    for markup in ("[[", "]]", "{{", "}}", "'''", "<ref", "==", "&nbsp;"):
        assert markup not in text, markup
    assert all(len(line.split()) >= 6 for line in text.split("\n"))


def test_builtin_lee_news():
    pytest.importorskip("gensim")
    lee = docs("builtin:lee")
    assert len(lee) == 300
    assert lee[0].startswith("Hundreds of people have been forced to vacate their homes")


def test_fetched_builtins_say_how_to_get_them(cache):
    for name in ("austen", "shakespeare"):
        with pytest.raises(CapscaleError, match=f"capscale data fetch {name}"):
            list(parse_source(f"builtin:{name}", cache_dir=cache).documents())


def _r_xdr_strings(values: list[tuple[str, str]]) -> bytes:
    """An R character vector in XDR serialization (R Internals, 'Serialization formats')."""
    out = b"X\n" + struct.pack(">iii", 3, 0x040201, 0x030500) + struct.pack(">i", 5) + b"UTF-8"
    out += struct.pack(">ii", 16, len(values))  # STRSXP
    for text, enc in values:
        raw = text.encode(enc)
        level = {"utf-8": 1 << 3, "latin-1": 1 << 2}[enc]
        out += struct.pack(">ii", 9 | (level << 12), len(raw)) + raw  # CHARSXP
    return out


def test_r_lazy_load_database_reader():
    vectors = [[("EMMA", "utf-8"), ("Café crème", "latin-1")], [("Persuasion", "utf-8")]]
    rdb = b""
    for v in vectors:
        blob = zlib.compress(_r_xdr_strings(v))
        rdb += struct.pack(">i", len(blob)) + blob
    assert list(r_character_vectors(rdb)) == [["EMMA", "Café crème"], ["Persuasion"]]
