"""`capscale demo`: the whole pipeline on built-in defaults (a few minutes on a CPU)."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT0, COUNT1

HELP = ("the main job: GMSE panel, unified law on the QuEST runs with held-out formats, a small "
        "training sweep checked against GMSE, and the report")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--out", default="capscale-demo", metavar="DIR",
                   help="output folder (default ./capscale-demo); a second run reuses its runs")
    p.add_argument("--jobs", type=COUNT1, help="training runs at once (default 2)")
    p.add_argument("--threads", type=COUNT1, help="CPU threads per run (default 1)")
    p.add_argument("--bootstrap", type=COUNT0, default=400, metavar="B",
                   help="bootstrap resamples for the fits' intervals (default 400)")


def run(args: argparse.Namespace) -> int:
    from capscale.demo import run_demo

    run_demo(args.out, jobs=args.jobs, threads=args.threads, n_bootstrap=args.bootstrap)
    return 0
