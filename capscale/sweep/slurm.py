"""Running a sweep on a SLURM cluster: through ``submitit`` (a job per run, or one job
array), or as a plain ``sbatch`` array script for clusters without it.

Every job runs :mod:`capscale.sweep.worker` on one node with ``gpus_per_run`` GPUs (one
``torchrun`` process per GPU when there are several). Jobs are safe to resubmit: a job whose
run has finished returns at once, and one whose run is held by a job still running leaves it
alone; an unfinished run resumes from its latest checkpoint. Through submitit, a job that
reaches its time limit is requeued and continues from its latest checkpoint by itself; an
``sbatch`` array task continues when the sweep is submitted again.

``[slurm]`` keys (all optional): ``partition``, ``account``, ``qos``, ``constraint``,
``timeout_min`` (default 1440), ``cpus_per_gpu`` (default 8), ``mem_gb`` (per job),
``array`` (default true: one job array), ``array_parallelism`` (at most this many tasks at
once), ``job_name``, ``setup`` (shell lines run before the worker, e.g. ``module load
cuda``), ``python`` (the interpreter on the cluster; default this one), ``additional``
(other sbatch options, e.g. ``{exclusive = true, mail-type = "END"}``), and ``cluster``
(submitit's executor: ``slurm``, or ``local``/``debug`` to run the same jobs here, for testing).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from capscale.errors import CapscaleError
from capscale.io import atomic_write_json, atomic_write_text
from capscale.sweep.schema import (  # noqa: F401  (the [slurm] table; re-exported)
    CLUSTERS,
    DEFAULTS,
    SLURM_KEYS,
    validate_slurm,
)

CPU_JOB_CPUS = 2  # a CPU-sized run (no GPU): one training process and its data loading
DEFAULT_TIMEOUT_MIN = 1440  # without a cost estimate
STOP_WARNING_S = 300  # SIGUSR1 this long before the time limit: checkpoint and stop
NODE_LOCAL = ("/tmp", "/var/tmp", "/dev/shm", "/scratch/local", "/local")


def size_request(slurm: dict, hours_per_run: float) -> dict:
    """``slurm`` with its time limit sized from the cost estimate of the longest run (1.5x,
    plus 10 minutes for start-up and evaluation, at least 15 minutes), unless the spec
    gives ``timeout_min``."""
    import math

    out = dict(slurm)
    if "timeout_min" not in out:
        out["timeout_min"] = max(15, math.ceil(hours_per_run * 60 * 1.5 + 10))
    return out


def node_local_paths(paths) -> list[str]:
    """The paths among ``paths`` that lie in node-local storage on most clusters."""
    found = []
    for p in paths:
        text = str(p)
        if any(text == d or text.startswith(d + "/") for d in NODE_LOCAL) and text not in found:
            found.append(text)
    return found
SLURM_DIR = "slurm"


def job_parameters(slurm: dict, name: str, gpus_per_run: int) -> dict:
    """submitit's ``update_parameters`` arguments for one run's job."""
    params = {"name": slurm.get("job_name", f"capscale-{name}"),
              "timeout_min": slurm.get("timeout_min", DEFAULT_TIMEOUT_MIN), "nodes": 1,
              "tasks_per_node": 1,
              "gpus_per_node": gpus_per_run,
              "cpus_per_task": (slurm["cpus_per_gpu"] * gpus_per_run if gpus_per_run
                                else CPU_JOB_CPUS)}
    if "mem_gb" in slurm:
        params["mem_gb"] = slurm["mem_gb"]
    for k in ("partition", "account", "qos", "constraint"):
        if k in slurm:
            params[f"slurm_{k}"] = slurm[k]
    if "array_parallelism" in slurm:
        params["slurm_array_parallelism"] = slurm["array_parallelism"]
    if slurm.get("setup"):
        params["slurm_setup"] = list(slurm["setup"])
    if slurm.get("additional"):
        params["slurm_additional_parameters"] = dict(slurm["additional"])
    return params


def _sbatch_time(minutes: int) -> str:
    d, rem = divmod(minutes, 1440)
    h, m = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:00" if d else f"{h:02d}:{m:02d}:00"


def sbatch_script(slurm: dict, sweep_name: str, manifest: Path, names: list[str],
                  gpus_per_run: int, requeue: bool = False) -> str:
    """A job-array script: task i runs the i-th of ``names``. The worker runs in the
    background so that the script can pass on SLURM's signals: SIGUSR1 (sent
    :data:`STOP_WARNING_S` seconds before the time limit) or SIGTERM (preemption) makes the
    run checkpoint and stop; with ``requeue`` the task then requeues itself and resumes."""
    if not names:
        raise CapscaleError("no runs to submit")
    manifest = Path(manifest).resolve()  # the script runs from wherever SLURM starts it
    root = manifest.parent
    p = job_parameters(slurm, sweep_name, gpus_per_run)
    array = f"0-{len(names) - 1}" + (f"%{slurm['array_parallelism']}" if "array_parallelism" in slurm else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={p['name']}", f"#SBATCH --array={array}",
             "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
             f"#SBATCH --cpus-per-task={p['cpus_per_task']}",
             f"#SBATCH --time={_sbatch_time(p['timeout_min'])}",
             f"#SBATCH --output={root / SLURM_DIR / '%A_%a.log'}",
             f"#SBATCH --signal=B:USR1@{STOP_WARNING_S}"]
    if requeue:
        lines.append("#SBATCH --requeue")
    if gpus_per_run:
        lines.append(f"#SBATCH --gpus-per-node={gpus_per_run}")
    if "mem_gb" in p:
        lines.append(f"#SBATCH --mem={int(p['mem_gb'])}G")
    for k in ("partition", "account", "qos", "constraint"):
        if k in slurm:
            lines.append(f"#SBATCH --{k}={slurm[k]}")
    for k, v in (slurm.get("additional") or {}).items():
        flag = k.replace("_", "-")
        lines.append(f"#SBATCH --{flag}" if v is True else f"#SBATCH --{flag}={v}")
    from capscale.sweep.worker import INTERRUPTED

    task = '"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'
    lines += ["", "set -euo pipefail", *slurm.get("setup", []),
              "RUNS=(" + " ".join(shlex.quote(n) for n in names) + ")",
              "# time limit near (USR1) or preemption (TERM): the run checkpoints and stops; the",
              "# trap is set before the run starts, so a signal that comes early is not lost",
              'child=""; stop=0',
              "trap 'stop=1; if [ -n \"$child\" ]; then kill -TERM \"$child\" 2>/dev/null || "
              "true; fi' USR1 TERM",
              f"{shlex.quote(slurm.get('python', sys.executable))} -m capscale.sweep.worker "
              f"{shlex.quote(str(manifest))} \"${{RUNS[$SLURM_ARRAY_TASK_ID]}}\" "
              f"--nproc {max(1, gpus_per_run)} &",
              "child=$!",
              'if [ "$stop" -eq 1 ]; then kill -TERM "$child" 2>/dev/null || true; fi',
              "set +e",
              "wait \"$child\"; rc=$?",
              'while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done',
              "set -e",
              f"if [ \"$rc\" -eq {INTERRUPTED} ]; then",
              (f"  scontrol requeue {task}; exit 0" if requeue else
               "  echo \"run stopped at a checkpoint; submit the sweep again to resume\"; exit 0"),
              "fi",
              'exit "$rc"',
              ""]
    return "\n".join(lines)


def write_sbatch(slurm: dict, sweep_name: str, manifest: Path, names: list[str],
                 gpus_per_run: int, requeue: bool = False) -> Path:
    path = manifest.parent / SLURM_DIR / "sweep.sbatch"
    return atomic_write_text(path, sbatch_script(slurm, sweep_name, manifest, names, gpus_per_run,
                                                 requeue))


def submitit_executor(slurm: dict, sweep_name: str, root: Path, gpus_per_run: int):
    try:
        import submitit
    except ImportError:
        raise CapscaleError(
            "the slurm launcher submits through submitit, which is not installed: "
            "pip install 'capscale[slurm]' (or use --sbatch to write a plain job-array script)"
        ) from None
    cluster = slurm.get("cluster", "slurm")
    if cluster == "slurm":
        import shutil

        missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
        if missing:
            raise CapscaleError(
                f"the slurm launcher needs {' and '.join(missing)} on PATH, which this machine "
                "lacks: launch from a SLURM login node, or write a job-array script with "
                "--sbatch and submit it there")
    executor = submitit.AutoExecutor(folder=str(root / SLURM_DIR / "%j"), cluster=cluster)
    params = job_parameters(slurm, sweep_name, gpus_per_run)
    if cluster != "slurm":  # submitit's local executors take the generic parameters only
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        params.pop("nodes", None)
        if cluster == "local" and not _has_gpu():
            params.pop("gpus_per_node", None)
    executor.update_parameters(**params)
    return executor


def _has_gpu() -> bool:
    from capscale.sweep.local import visible_gpus

    return bool(visible_gpus())


def submit(slurm: dict, sweep_name: str, manifest: Path, names: list[str], gpus_per_run: int):
    """Submit one job per run (``array = false``) or one job array; returns the jobs and
    records their ids in ``ROOT/slurm/jobs.json``."""
    if not names:
        return []
    root = manifest.parent
    executor = submitit_executor(slurm, sweep_name, root, gpus_per_run)
    from capscale.sweep.slurm_job import RunJob

    nproc = max(1, gpus_per_run)
    if slurm.get("array", True):
        with executor.batch():
            jobs = [executor.submit(RunJob(), str(manifest), n, nproc) for n in names]
    else:
        jobs = [executor.submit(RunJob(), str(manifest), n, nproc) for n in names]
    record_path = root / SLURM_DIR / "jobs.json"
    record = []
    if record_path.exists():
        import json

        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            record = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    record += [{"job_id": str(j.job_id), "run": n, "submitted": stamp} for j, n in zip(jobs, names)]
    atomic_write_json(record_path, record)
    return jobs
