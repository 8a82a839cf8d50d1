"""One run of a sweep, as a process: ``python -m capscale.sweep.worker MANIFEST NAME``.

Every launcher ends here (a local process, a SLURM job, a job array task). The worker

1. holds an exclusive lock on ``RUN_DIR/.lock`` for the whole run, so two launches of the
   same run (a sweep started twice, a job resubmitted while the first is still running) never
   write into one folder: the second exits at once with status :data:`BUSY`;
2. returns at once when the run already has its result record;
3. refuses a folder whose saved config differs from the sweep's (the spec changed under it);
4. trains, resuming from the latest checkpoint when there is one, in this process or, with
   ``--nproc G > 1``, in G processes under ``torchrun`` (the lock stays with this process).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from capscale import runrecord
from capscale.errors import CapscaleError

MANIFEST = "sweep.json"
LOCK = ".lock"
BUSY = 75  # EX_TEMPFAIL: another process holds the run
INTERRUPTED = 76  # the run stopped on SIGTERM/SIGUSR1 after a checkpoint: resubmit to resume


def read_manifest(path: str | os.PathLike) -> dict:
    return runrecord.read_json(path, "sweep manifest")


def run_config(manifest_path: str | os.PathLike, name: str):
    """The TrainConfig of run ``name``, with its folder beside the manifest."""
    from capscale.train import TrainConfig

    manifest = read_manifest(manifest_path)
    for run in manifest["runs"]:
        if run["name"] == name:
            cfg = TrainConfig.from_dict(run["config"])
            cfg.out = str(Path(manifest_path).resolve().parent / name)
            return cfg
    raise CapscaleError(f"sweep manifest {manifest_path} has no run named {name!r}")


def differing_settings(cfg) -> str:
    """The settings in which the run saved in ``cfg.out`` differs from ``cfg`` ("" when the
    folder holds no run, or this one): ``"lr: folder 0.5, spec None, ..."``."""
    from capscale.train.records import identity

    saved_path = Path(cfg.out) / runrecord.CONFIG
    if not saved_path.exists():
        return ""
    saved = runrecord.read_json(saved_path, "run config").get("config", {})
    saved = identity(saved if isinstance(saved, dict) else {})
    wanted = identity(cfg.to_dict())
    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    more = f", and {len(diff) - 6} more" if len(diff) > 6 else ""
    return ", ".join(f"{k}: folder {saved.get(k)!r}, spec {wanted.get(k)!r}" for k in diff[:6]) + more


def check_same_run(cfg) -> None:
    """A folder that already holds a run must hold this run."""
    shown = differing_settings(cfg)
    if shown:
        raise CapscaleError(
            f"run folder {cfg.out} holds a run with other settings ({shown}); the spec changed "
            "after the run started: move the folder away or restore the spec")


class RunLock:
    """An exclusive, non-blocking ``flock`` on the run folder's lock file; released by the
    kernel when the process ends, however it ends."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class LaunchLock:
    """Launches of one sweep folder with the same runs may share it; a launch with other runs
    (the spec changed) is refused while any of them is alive.

    Each launch holds a shared ``flock`` on ``ROOT/.launches/KEY.lock`` (KEY: the hash of its
    runs) for as long as it runs; taking it, under an exclusive guard lock, it checks that no
    other key's lock is held. The kernel drops the locks of a process however it ends, so a
    killed launch never blocks the next one."""

    DIR = ".launches"

    def __init__(self, root: str | os.PathLike, key: str, describe: str = ""):
        self.dir = Path(root) / self.DIR
        self.key = key
        self.describe = describe
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl
        import time

        self.dir.mkdir(parents=True, exist_ok=True)
        guard = os.open(self.dir / "guard", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            for other in sorted(self.dir.glob("*.lock")):
                if other.stem == self.key:
                    continue
                fd = os.open(other, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    holder = other.read_text(errors="replace").strip() or "another launch"
                    raise CapscaleError(
                        f"sweep folder {self.dir.parent} is in use by a launch of other runs "
                        f"({holder}); a folder takes one spec at a time: wait for that launch "
                        "to end, or sweep into another folder (--out)") from None
                finally:
                    os.close(fd)
                other.unlink()  # a lock nobody holds: left by a launch that has ended
            fd = os.open(self.dir / f"{self.key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(fd, fcntl.LOCK_SH)
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}, {self.describe}, since "
                         f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            self.fd = fd
        finally:
            os.close(guard)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> LaunchLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def die_with_parent(sig: int = signal.SIGKILL):
    """A ``preexec_fn`` that has Linux deliver ``sig`` to the child when its parent dies, so a
    killed sweep leaves no run behind it still writing (no-op elsewhere)."""
    def set_pdeathsig() -> None:
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(sig))  # PR_SET_PDEATHSIG
        except OSError:
            pass
    return set_pdeathsig if sys.platform.startswith("linux") else None


def torchrun_command(manifest_path: str, name: str, nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "capscale.sweep.worker", str(manifest_path), name]


def run_worker(manifest_path: str | os.PathLike, name: str, nproc: int = 1) -> int:
    """Run ``name`` of the sweep whose manifest is ``manifest_path``; returns an exit status
    (0: the run has its result record; :data:`BUSY`: another process holds it)."""
    from capscale.train import train

    cfg = run_config(manifest_path, name)
    if "RANK" in os.environ and "LOCAL_RANK" in os.environ:  # a rank under torchrun: the
        train(cfg, resume=True)                               # parent worker holds the lock
        return 0
    lock = RunLock(cfg.out)
    if not lock.acquire():
        print(f"{name}: another process holds {lock.path}; leaving the run to it", file=sys.stderr)
        return BUSY
    try:
        if runrecord.read_result(cfg.out) is not None:
            return 0
        check_same_run(cfg)
        if nproc > 1:
            cmd = torchrun_command(str(manifest_path), name, nproc)
            return subprocess.call(cmd, preexec_fn=die_with_parent(signal.SIGTERM))
        result = train(cfg, resume=True)
        return INTERRUPTED if result.get("status") == runrecord.INTERRUPTED else 0
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m capscale.sweep.worker",
                                description="run one run of a sweep (launchers call this)")
    p.add_argument("manifest", help=f"the sweep's {MANIFEST}")
    p.add_argument("name", help="the run's folder name")
    p.add_argument("--nproc", type=int, default=1, help="processes for the run (torchrun)")
    args = p.parse_args(argv)
    try:
        return run_worker(args.manifest, args.name, args.nproc)
    except CapscaleError as e:
        print(f"capscale sweep worker: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
