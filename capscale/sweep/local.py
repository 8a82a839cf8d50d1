"""Running a sweep's runs on this machine: N worker processes at once, each on its own share
of the cores (CPU) or its own group of GPUs, one ``torchrun`` per run when a run takes several
GPUs; with progress over the whole sweep.

The loop runs in the main thread and polls its children: they are started with a
parent-death signal, so a sweep killed with SIGKILL takes its runs with it, and the runs
resume from their checkpoints when the sweep is started again.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from capscale.durations import format_duration
from capscale.errors import CapscaleError
from capscale.runrecord import DIVERGED, FINISHED, read_result
from capscale.sweep.spec import PlannedRun
from capscale.sweep.state import progress_of, run_status
from capscale.sweep.worker import BUSY, INTERRUPTED, die_with_parent

LOG = "train.log"


def fmt_duration(seconds: float) -> str:
    """A sweep's durations: whole seconds, hours however many (``2m05s``, ``55h33m``)."""
    return format_duration(seconds, whole_seconds=True, days=False)


@dataclass
class Progress:
    """Progress over the whole sweep, weighted by each run's FLOPs (a 350k-parameter run is
    not worth the same as a 30k one). One refreshed line on a terminal; plain lines (events,
    and a summary every ``every`` seconds) otherwise."""

    runs: list[PlannedRun]
    weights: dict[str, float]
    already_done: int = 0
    stream: object = field(default=sys.stderr)
    every: float = 30.0
    done_weight: float = 0.0
    counts: dict = field(default_factory=lambda: {FINISHED: 0, DIVERGED: 0, "failed": 0})
    start: float = field(default_factory=time.perf_counter)
    _last_print: float = 0.0

    def __post_init__(self):
        self.total_weight = sum(self.weights[r.name] for r in self.runs) or 1.0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def event(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def ended(self, run: PlannedRun, outcome: str) -> None:
        key = outcome if outcome in self.counts else "failed"
        self.counts[key] += 1
        self.done_weight += self.weights[run.name]

    def line(self, running: dict[str, float]) -> str:
        """``running``: name -> fraction of its steps done."""
        partial = sum(self.weights[n] * f for n, f in running.items())
        frac = (self.done_weight + partial) / self.total_weight
        elapsed = time.perf_counter() - self.start
        eta = f", ETA {fmt_duration(elapsed * (1 - frac) / frac)}" if frac > 0.02 else ""
        done = sum(self.counts.values())
        bad = "".join(f", {v} {k}" for k, v in self.counts.items() if k != FINISHED and v)
        return (f"[sweep] {done + self.already_done}/{len(self.runs) + self.already_done} runs done"
                f"{bad}, {len(running)} running, {frac:.0%} of this launch's compute, "
                f"{fmt_duration(elapsed)} elapsed{eta}")

    def tick(self, running: dict[str, float], force: bool = False) -> None:
        now = time.perf_counter()
        if self.tty:
            if force or now - self._last_print >= 1.0:
                self.stream.write("\r\033[K" + self.line(running))
                self.stream.flush()
                self._last_print = now
        elif force or now - self._last_print >= self.every:
            self.stream.write(self.line(running) + "\n")
            self.stream.flush()
            self._last_print = now

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def visible_gpus() -> list[str]:
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPUs
        return []


def slots(jobs: int, nproc: int, device: str) -> list[dict[str, str]]:
    """The environment of each of ``jobs`` concurrent runs: a disjoint group of ``nproc`` GPUs
    each when runs train on GPUs, else an equal share of the CPU cores."""
    gpus = visible_gpus() if device in ("auto", "cuda") else []
    if gpus:
        if jobs * nproc > len(gpus):
            raise CapscaleError(
                f"{jobs} runs at once x {nproc} GPU(s) each needs {jobs * nproc} GPUs; "
                f"{len(gpus)} are visible: lower --jobs or --gpus-per-run")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i * nproc:(i + 1) * nproc])}
                for i in range(jobs)]
    if nproc > 1 and device not in ("auto", "cpu"):
        raise CapscaleError(f"--gpus-per-run {nproc} but no GPU is visible")
    return [{} for _ in range(jobs)]


def thread_env(threads: int) -> dict[str, str]:
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def launch_local(manifest: Path, todo: list[PlannedRun], root: Path, *, jobs: int = 1,
                 threads: int | None = None, nproc: int = 1, progress: Progress,
                 poll: float = 0.5) -> dict[str, str]:
    """Run ``todo`` through worker processes, ``jobs`` at a time; returns each run's outcome
    ("finished", "diverged", "busy" or "failed (...)")."""
    if jobs < 1:
        raise CapscaleError(f"--jobs {jobs}: must be at least 1")
    if nproc < 1:
        raise CapscaleError(f"--gpus-per-run {nproc}: must be at least 1")
    device = todo[0].config.device if todo else "auto"
    envs = slots(jobs, nproc, device)
    cpu = not envs[0].get("CUDA_VISIBLE_DEVICES")
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs) if cpu else 4
    queue = deque(todo)
    free = deque(range(jobs))
    running: dict[str, tuple] = {}
    outcomes: dict[str, str] = {}
    try:
        while queue or running:
            while queue and free:
                run = queue.popleft()
                slot = free.popleft()
                running[run.name] = (_start(manifest, run, root, envs[slot], threads, nproc), slot, run)
                progress.event(f"[sweep] started {run.name} ({run.steps} steps, N={run.n_params:,}, "
                               f"D={run.tokens:,})")
            time.sleep(poll)
            for name, ((proc, log), slot, run) in list(running.items()):
                rc = proc.poll()
                if rc is None:
                    continue
                log.close()
                free.append(slot)
                del running[name]
                outcomes[name] = _outcome(root / name, rc)
                progress.ended(run, outcomes[name])
                progress.event(_describe(root / name, name, outcomes[name]))
            progress.tick({n: min(1.0, progress_of(root / n) / max(r.steps, 1))
                           for n, (_, _, r) in running.items()})
    except BaseException:
        _stop([p for (p, _), _, _ in running.values()])
        raise
    finally:
        for (_, log), _, _ in running.values():
            log.close()
    progress.tick({}, force=True)
    return outcomes


def _start(manifest: Path, run: PlannedRun, root: Path, slot_env: dict, threads: int, nproc: int):
    run_dir = root / run.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / LOG, "a", encoding="utf-8")  # noqa: SIM115 - closed when the run ends
    log.write(f"=== capscale sweep: {time.strftime('%Y-%m-%d %H:%M:%S')} start or resume ===\n")
    log.flush()
    env = {**thread_env(threads), **slot_env}
    if nproc == 1 and hasattr(os, "fork"):
        return ForkedRun(manifest, run.name, log, env, threads), log
    cmd = [sys.executable, "-m", "capscale.sweep.worker", str(manifest), run.name,
           "--nproc", str(nproc)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            stdin=subprocess.DEVNULL, preexec_fn=die_with_parent())
    return proc, log


class ForkedRun:
    """A run in a forked child of the sweep: it starts in milliseconds with torch and capscale
    already imported (a fresh interpreter spends seconds on imports, as long as a tiny run
    trains). The child writes to the run's log, dies with its parent, and exits with the
    worker's status. Quacks like the part of ``subprocess.Popen`` the loop uses."""

    def __init__(self, manifest: Path, name: str, log, env: dict, threads: int):
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # the child never returns from here
            rc = 1
            try:
                die_with_parent()()
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
                sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), line_buffering=True)
                sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), line_buffering=True)
                os.environ.update(env)
                import torch

                torch.set_num_threads(threads)
                from capscale.sweep.worker import run_worker

                rc = run_worker(manifest, name, 1)
            except KeyboardInterrupt:
                rc = 130
            except BaseException:  # noqa: BLE001 - reported in the run's log
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"run {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _outcome(run_dir: Path, rc: int) -> str:
    if rc == BUSY:
        return "busy"
    if rc == INTERRUPTED:
        return "interrupted (checkpointed; launch again to resume)"
    status, _ = run_status(run_dir)
    if status in (FINISHED, DIVERGED):
        return status
    return f"failed (exit {rc}; see {run_dir / LOG})"


def _describe(run_dir: Path, name: str, outcome: str) -> str:
    if outcome == FINISHED:
        r = read_result(run_dir)
        return (f"[sweep] finished {name}: val loss {r['loss']:.4f} "
                f"({fmt_duration(r.get('wall_time_s') or 0)})")
    if outcome == DIVERGED:
        r = read_result(run_dir)
        return f"[sweep] DIVERGED {name} at step {r.get('diverged_at_step')}"
    if outcome == "busy":
        return f"[sweep] {name}: another process is running it; left to that process"
    tail = ""
    log = run_dir / LOG
    if log.exists():
        lines = log.read_text(errors="replace").splitlines()[-12:]
        tail = "\n".join("    " + line for line in lines)
    return f"[sweep] FAILED {name}: {outcome}\n{tail}"


def _stop(procs: list[subprocess.Popen], grace: float = 10.0) -> None:
    """Interrupted: ask the runs to stop (their checkpoints are already on disk), then insist."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
