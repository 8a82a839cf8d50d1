"""`capscale sweep SPEC.toml`: run a grid of training runs, resumably, and write the runs table."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT1

HELP = "run a sweep of training runs from a TOML spec (local, torchrun or SLURM), resumably"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="sweep spec (.toml): [grid], [train], [[runs]], [launcher], "
                                "[slurm], [cost]; see the README")
    p.add_argument("-o", "--out", metavar="DIR", help="folder of the runs (default: the spec's "
                                                      "out, else runs/<name>)")
    p.add_argument("--launcher", choices=["local", "torchrun", "slurm"],
                   help="local processes (default), one torchrun per run, or SLURM via submitit")
    p.add_argument("--jobs", type=COUNT1, help="runs at once (local/torchrun; default 1)")
    p.add_argument("--threads", type=COUNT1, help="CPU threads per run (default: cores / jobs)")
    p.add_argument("--gpus-per-run", type=COUNT1,
                   help="GPUs (torchrun processes) per run (torchrun default: all visible / jobs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs, their status, the cost estimate and the interval "
                        "each ρ would get (simulated from a prior law); change nothing")
    p.add_argument("--collect", action="store_true",
                   help="launch nothing: write the runs table from the folders as they are")
    p.add_argument("--sbatch", action="store_true",
                   help="slurm: write a job-array script to submit by hand instead of submitting")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the submitted jobs")
    p.add_argument("--requeue", action="store_true",
                   help="slurm --sbatch: a task warned of its time limit (SIGUSR1) or preempted "
                        "(SIGTERM) checkpoints, stops and requeues itself to resume")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--reuse", action="append", default=[], metavar="DIR",
                   help="copy in finished runs of the same settings from this sweep or study "
                        "folder instead of training them again (repeatable)")


def run(args: argparse.Namespace) -> int:
    from capscale.sweep import load_spec, run_sweep

    spec = load_spec(args.spec)
    out = run_sweep(spec, args.out, launcher=args.launcher, jobs=args.jobs, threads=args.threads,
                    gpus_per_run=args.gpus_per_run, dry_run=args.dry_run,
                    collect_only=args.collect, sbatch=args.sbatch, wait=args.wait,
                    quiet=args.quiet, requeue=args.requeue, reuse=args.reuse)
    if args.dry_run:  # what each ρ's interval would be, before a step is trained
        from capscale.studies.design import describe, simulate

        print(describe(simulate(spec)))
    return 0 if out.ok else 1
