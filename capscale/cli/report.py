"""`capscale report RUNS_OR_FIT -o DIR`: a self-contained report folder (index.html, plots, tables)."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT0

HELP = "write a report (index.html, PNG plots, CSV tables) of a runs table or a fit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="runs table (.csv, .parquet, .jsonl, a folder of runs, "
                                  "builtin:NAME) or a fit JSON from `capscale fit -o`")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="report folder")
    p.add_argument("--runs", metavar="TABLE",
                   help="with a fit JSON: the runs it was fitted on (default: its recorded source)")
    p.add_argument("--bootstrap", type=COUNT0, default=1000, metavar="B",
                   help="bootstrap resamples for the intervals (default 1000)")
    p.add_argument("--capacity-groups", metavar="MODE",
                   help="unified law: one capacity curve per 'kind' (default), 'single', ...")
    p.add_argument("--panel", metavar="SPEC,...",
                   help="unified fits: formats never trained to place on the Pareto front "
                        "(default: the comparison panel of `capscale compare`)")
    p.add_argument("--title", help="page title")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from capscale.report import build_report

    path = build_report(args.source, args.out, runs=args.runs, n_bootstrap=args.bootstrap,
                        capacity_groups=args.capacity_groups, title=args.title,
                        panel=args.panel.split(",") if args.panel else None, quiet=args.quiet)
    print(f"report: {path}")
    return 0
