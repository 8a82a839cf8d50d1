"""``run_sweep``: from a spec to a folder of runs and a runs table, idempotently.

Each call looks at every run's folder first: finished runs are skipped, diverged runs are
reported (and not retried: the same settings diverge again), unfinished runs resume from
their latest checkpoint, pending runs start. Then the chosen launcher runs what is left, and
the tables are written (:mod:`capscale.sweep.state`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from capscale.errors import CapscaleError
from capscale.runrecord import DIVERGED, FINISHED, PENDING, UNFINISHED
from capscale.sweep import cost as cost_mod
from capscale.sweep import reuse as reuse_mod
from capscale.sweep import slurm as slurm_mod
from capscale.sweep.advice import fit_advice
from capscale.sweep.local import Progress, launch_local
from capscale.sweep.spec import LAUNCHERS, SweepSpec
from capscale.sweep.state import (
    RUNS_TABLE,
    STATUSES,
    check_unchanged,
    order_for_launch,
    run_status,
    runs_key,
    status_table,
    write_manifest,
    write_tables,
)
from capscale.sweep.worker import LaunchLock


@dataclass
class SweepOutcome:
    root: Path
    status: pd.DataFrame  # every run of the spec with its status after this call
    launched: dict  # run name -> outcome of this call ("finished", "diverged", "failed ...")
    runs_csv: Path | None = None
    status_csv: Path | None = None
    submitted: list | None = None  # SLURM jobs

    @property
    def ok(self) -> bool:
        return not any(str(v).startswith("failed") for v in self.launched.values())


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def plan_text(spec: SweepSpec, root: Path, launcher: str, jobs: int, gpus_per_run: int) -> str:
    """What a launch would do: every run with its size, length and status, and the cost."""
    status = status_table(spec, root)
    est = cost_mod.estimate(spec)
    lines = [f"sweep {spec.name!r} ({spec.source}): {len(spec.runs)} runs -> {root}",
             f"{'run':<48} {'N':>12} {'D':>14} {'steps':>7} {'GPU-h':>8}  status"]
    for i, row in status.iterrows():
        lines.append(f"{row['name']:<48} {row['N']:>12,} {row['D']:>14,} {row['steps']:>7,} "
                     f"{est.hours_of(i):>8.2f}  {row['status']}")
    counts = status["status"].value_counts().to_dict()
    lines.append("status: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES))
    lines.append(f"cost: {est.describe()}")
    lines.append(f"launcher: {launcher}, {jobs} run(s) at once, {gpus_per_run} process(es) per run")
    lines.append(fit_advice(spec).describe(root / RUNS_TABLE))
    return "\n".join(lines)


def _slurm_request(spec: SweepSpec) -> dict:
    """The spec's [slurm] table with the time limit sized from the longest run's estimate."""
    est = cost_mod.estimate(spec)
    longest = max((est.hours_of(i) for i in range(len(spec.runs))), default=0.0)
    return slurm_mod.size_request(spec.slurm, longest)


def _node_local_warning(spec: SweepSpec, root: Path) -> str | None:
    paths = [root.resolve()]
    for r in spec.runs:
        paths += [p for p in (r.config.data_cache, r.config.data) if p]
    import os

    paths.append(os.environ.get("CAPSCALE_CACHE") or "")
    local = slurm_mod.node_local_paths(p for p in paths if p)
    if not local:
        return None
    return (f"warning: {', '.join(local)} may be node-local on a cluster (jobs on other nodes "
            "would not see it): put the runs folder, the data and the cache (--data-cache, "
            "$CAPSCALE_CACHE) on a shared file system")


def prepare_token_caches(runs, say=print) -> int:
    """Tokenize each distinct (data, tokenizer) of ``runs`` into the cache now, once, so that
    the jobs read it instead of each waiting on one tokenization. Returns how many."""
    from capscale.train.data import open_run_data

    seen = set()
    for r in runs:
        c = r.config
        key = (c.data, c.tokenizer, c.data_cache, c.val_fraction)
        if key in seen:
            continue
        seen.add(key)
        say(f"[sweep] token cache: {c.data} x {c.tokenizer}")
        open_run_data(c, planned_tokens=max(x.tokens for x in runs if x.config.data == c.data))
    return len(seen)


def run_sweep(spec: SweepSpec, root: str | Path | None = None, *, launcher: str | None = None,
              jobs: int | None = None, threads: int | None = None,
              gpus_per_run: int | None = None, dry_run: bool = False, collect_only: bool = False,
              sbatch: bool = False, wait: bool = False, quiet: bool = False,
              requeue: bool = False, reuse=()) -> SweepOutcome:
    """Bring every run of ``spec`` to an end (or submit it), then write the tables.

    ``launcher``/``jobs``/``threads``/``gpus_per_run`` default to the spec's ``[launcher]``
    table, then to local, one run at a time, all cores, one process per run (torchrun: every
    visible GPU). ``dry_run`` prints the plan and changes nothing; ``collect_only`` writes the
    tables from the folders as they are; ``sbatch`` (slurm) writes a job-array script instead
    of submitting; ``wait`` (slurm) waits for the submitted jobs. ``reuse`` names other sweep
    or study folders whose finished runs of the same settings are copied in instead of being
    trained again (:mod:`capscale.sweep.reuse`).
    """
    root = Path(root) if root is not None else spec.default_root()
    cfg = spec.launcher
    launcher = launcher or cfg.get("kind", "local")
    if launcher not in LAUNCHERS:
        raise CapscaleError(f"launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    jobs = jobs or cfg.get("jobs", 1)
    threads = threads or cfg.get("threads")
    gpus_per_run = gpus_per_run or cfg.get("gpus_per_run")
    if gpus_per_run is None:
        if launcher == "torchrun":
            from capscale.sweep.local import visible_gpus

            gpus_per_run = max(1, len(visible_gpus()) // jobs)
        elif launcher == "slurm" and cost_mod.cpu_sized(spec):
            gpus_per_run = 0  # runs of minutes on a CPU: ask SLURM for CPUs only
        else:
            gpus_per_run = 1
    for label, value in (("jobs", jobs), ("gpus-per-run", gpus_per_run)):
        if value < (0 if label == "gpus-per-run" and launcher == "slurm" else 1):
            raise CapscaleError(f"--{label} {value}: must be at least 1")
    if launcher == "local" and gpus_per_run > 1:
        raise CapscaleError("the local launcher runs one process per run; use --launcher "
                            "torchrun for several GPUs per run")
    if dry_run:
        text = plan_text(spec, root, launcher, jobs, gpus_per_run)
        if reuse:
            found = reuse_mod.reusable(spec, root, reuse, _on_gpu(launcher, gpus_per_run))
            text += (f"\nreuse: {len(found)} pending run(s) would be copied from "
                     f"{', '.join(map(str, reuse))} instead of trained")
        if launcher == "slurm":
            names = [r.name for r in spec.runs]
            request = _slurm_request(spec)
            text += "\n\nSLURM job parameters (submitit): " + repr(
                slurm_mod.job_parameters(request, spec.name, gpus_per_run))
            text += "\njob-array script (--sbatch writes it):\n" + slurm_mod.sbatch_script(
                request, spec.name, root / f".sweep-{runs_key(spec)}.json", names,
                gpus_per_run, requeue)
            warning = _node_local_warning(spec, root)
            if warning:
                text += "\n" + warning
        print(text)
        check_unchanged(spec, root)
        return SweepOutcome(root, status_table(spec, root), {})

    root.mkdir(parents=True, exist_ok=True)
    with LaunchLock(root, runs_key(spec), f"spec {spec.source}"):
        check_unchanged(spec, root)
        if reuse and not collect_only:  # --collect writes the tables of the folders as they are
            found = reuse_mod.reusable(spec, root, reuse, _on_gpu(launcher, gpus_per_run))
            copied = reuse_mod.take_finished(found, root)
            _say(f"[sweep] reused {copied} finished run(s) from {', '.join(map(str, reuse))}",
                 quiet)
        return _launch(spec, root, launcher, jobs, threads, gpus_per_run, collect_only, sbatch,
                       wait, quiet, requeue)


def _on_gpu(launcher: str, gpus_per_run: int) -> bool:
    """Whether the runs of this launch train on a GPU (what ``device = "auto"`` picks)."""
    if launcher == "slurm":
        return gpus_per_run > 0
    from capscale.sweep.local import visible_gpus

    return bool(visible_gpus())


def _launch(spec: SweepSpec, root: Path, launcher: str, jobs: int, threads: int | None,
            gpus_per_run: int, collect_only: bool, sbatch: bool, wait: bool,
            quiet: bool, requeue: bool = False) -> SweepOutcome:
    status = status_table(spec, root)
    diverged = status[status["status"] == DIVERGED]["name"].tolist()
    done = int((status["status"] == FINISHED).sum())
    todo_names = set(status[status["status"].isin([UNFINISHED, PENDING])]["name"])
    unfinished = int((status["status"] == UNFINISHED).sum())
    _say(f"[sweep] {spec.name}: {len(spec.runs)} runs in {root}: {done} finished, "
         f"{len(diverged)} diverged, {unfinished} to resume, "
         f"{len(todo_names) - unfinished} to start", quiet)
    for name in diverged:
        _say(f"[sweep] diverged earlier (not retried): {name}", quiet)
    if collect_only:
        todo_names = set()
    manifest = write_manifest(spec, root, {"launcher": launcher})
    est = cost_mod.estimate(spec)
    vocab = est.vocab_size
    todo = order_for_launch([r for r in spec.runs if r.name in todo_names], vocab)
    launched: dict = {}
    submitted = None
    if todo and launcher in ("local", "torchrun"):
        weights = {r.name: r.flops(vocab) for r in todo}
        progress = Progress(todo, weights, already_done=done + len(diverged),
                            stream=sys.stderr if not quiet else _Null())
        try:
            launched = launch_local(manifest, todo, root, jobs=jobs, threads=threads,
                                    nproc=gpus_per_run if launcher == "torchrun" else 1,
                                    progress=progress)
        finally:
            progress.close()
    elif todo and launcher == "slurm":
        names = [r.name for r in todo]
        request = _slurm_request(spec)
        warning = _node_local_warning(spec, root)
        if warning:
            _say(f"[sweep] {warning}", quiet)
        prepare_token_caches(todo, lambda m: _say(m, quiet))  # once, before any job starts
        if sbatch:
            path = slurm_mod.write_sbatch(request, spec.name, manifest, names, gpus_per_run,
                                          requeue)
            _say(f"[sweep] wrote {path} ({len(names)} array tasks); submit it with: sbatch {path}",
                 quiet)
        else:
            submitted = slurm_mod.submit(request, spec.name, manifest, names, gpus_per_run)
            ids = sorted({str(j.job_id).split("_")[0] for j in submitted})
            _say(f"[sweep] submitted {len(submitted)} run(s) as job(s) {', '.join(ids)}; logs in "
                 f"{root / slurm_mod.SLURM_DIR}; run the same command again to see where the "
                 "sweep stands and collect the table", quiet)
            if wait:
                for job, name in zip(submitted, names):
                    try:
                        job.result()
                        launched[name] = run_status(root / name)[0]
                    except Exception as e:  # noqa: BLE001 - a failed job is reported, not raised
                        launched[name] = f"failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
                        _say(f"[sweep] FAILED {name}: {launched[name]}", quiet)
    runs_csv, status_csv, status = write_tables(spec, root)
    counts = status["status"].value_counts().to_dict()
    failed = [n for n, v in launched.items() if str(v).startswith("failed")]
    _say(f"[sweep] {spec.name}: " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATUSES)
         + (f" ({len(failed)} failed in this launch: {', '.join(failed)})" if failed else ""), quiet)
    advice = fit_advice(spec)
    if advice.ok:
        _say(f"[sweep] runs table: {runs_csv} (fit it with: {advice.command(runs_csv)})", quiet)
    else:
        _say(f"[sweep] runs table: {runs_csv}; the spec's runs cannot identify the "
             f"{advice.law} law: {advice.problem}", quiet)
    return SweepOutcome(root, status, launched, runs_csv, status_csv, submitted)


class _Null:
    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
