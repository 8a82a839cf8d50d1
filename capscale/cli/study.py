"""`capscale study`: the unified paper's experiments as runnable, analysed studies."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT0, COUNT1

HELP = "list, run (resumably) and report the unified paper's experiments as studies"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    sub.add_parser("list", help="every study: paper figure, runs, CPU time, accelerator-hours",
                   description="Every study with its paper figure, its runs at CPU scale and "
                   "their estimated time on 2 cores, and its runs and accelerator-hours at "
                   "paper scale.")
    run = sub.add_parser("run", help="train a study's runs (resumably), then analyse them",
                         description="Train a study's runs through the sweep engine (finished "
                         "runs are kept; run it again to resume), then analyse them and write "
                         "the report. --dry-run prints the runs, their cost and the interval "
                         "each ρ would get from the design, and trains nothing.")
    run.add_argument("name", help="study: int, noise, fp, groups, sparse, vq, lsq")
    run.add_argument("--scale", choices=["cpu", "paper"], default="cpu",
                     help="cpu (default: the CPU ladder on the embedded corpus) or paper "
                          "(30M-200M on C4, the Llama-2 tokenizer, 100 tokens per parameter)")
    run.add_argument("-o", "--out", metavar="DIR", help="study folder (default studies/NAME-SCALE)")
    run.add_argument("--jobs", type=COUNT1, help="runs at once (default: the ladder's)")
    run.add_argument("--threads", type=COUNT1, help="CPU threads per run")
    run.add_argument("--launcher", choices=["local", "torchrun", "slurm"],
                     help="local processes, one torchrun per run, or SLURM (default: the "
                          "ladder's: local at CPU scale, slurm at paper scale)")
    run.add_argument("--dry-run", action="store_true",
                     help="print the runs, their cost and the simulated interval of each ρ; "
                          "train nothing")
    run.add_argument("--bootstrap", type=COUNT0, default=400, help="bootstrap resamples (400)")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.add_argument("--reuse", action="append", default=[], metavar="DIR",
                     help="copy in finished runs of the same settings from another study or "
                          "sweep folder instead of training them again (repeatable)")
    rep = sub.add_parser("report", help="analyse a study folder and write its report",
                         description="Analyse the finished runs of a study folder: ρ per "
                         "representation with intervals, the paper's claims checked, the "
                         "unified curve per compression type; writes DIR/report/index.html.")
    rep.add_argument("dir", help="study folder (from capscale study run)")
    rep.add_argument("--bootstrap", type=COUNT0, default=400, help="bootstrap resamples (400)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import capscale.studies as st

    if args.study_command == "list":
        table = st.catalog_table()
        print(f"{'study':<8} {'figure':<14} {'CPU runs':>8} {'CPU h (2 cores)':>16} "
              f"{'paper runs':>10} {'accelerator-h':>14}  what")
        for _, r in table.iterrows():
            print(f"{r['study']:<8} {r['figure']:<14} {r['runs_cpu']:>8} "
                  f"{r['cpu_hours_2_cores']:>16.1f} {r['runs_paper']:>10} "
                  f"{r['accelerator_hours_paper']:>11,.0f} {r['accelerator']}  {r['what']}")
        print("CPU hours: estimated from the CPU ladder's measured step times, two runs at once "
              "on a quiet 2-core machine; accelerator-hours: 6·(N + V·d)·D FLOPs at 30% MFU "
              "(capscale sweep's cost model)")
        return 0
    if args.study_command == "report":
        st.report_study(args.dir, n_bootstrap=args.bootstrap)
        return 0
    st.study(args.name)
    out = Path(args.out) if args.out else Path("studies") / f"{args.name}-{args.scale}"
    if args.dry_run:
        from capscale.studies.design import print_plan

        print_plan(args.name, args.scale, out, launcher=args.launcher, jobs=args.jobs,
                   reuse=args.reuse)
        return 0
    outcome = st.run_study(args.name, out, scale=args.scale, jobs=args.jobs,
                           threads=args.threads, launcher=args.launcher, quiet=args.quiet,
                           reuse=args.reuse)
    if not outcome.ok:
        print(f"capscale study: some runs failed (logs in {out}); run the same command again "
              "to retry them")
        return 1
    st.report_study(out, n_bootstrap=args.bootstrap)
    return 0
