"""Finished runs of other folders taken into a sweep instead of being trained again.

Studies share runs: every study's dense ladder is the same, and ``fp`` and ``lsq`` train the
same INT4/6/8 runs with trust estimation. ``--reuse DIR`` looks in other sweep or study
folders for finished runs that compute exactly what a pending run of this sweep would (the
same settings, runtime ones aside: :func:`capscale.train.records.identity`) and copies them in,
so that they are trained once. A copy is made beside its destination and renamed into place,
so a run folder is never half-copied; checkpoints are left behind (a finished run needs none),
and ``reused.json`` in the copy names the folder it came from.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from capscale import runrecord
from capscale.errors import CapscaleError
from capscale.io import atomic_write_json


def _key(config: dict) -> str:
    from capscale.train.records import identity

    return json.dumps(identity(config), sort_keys=True, default=str)


def finished_runs(folder: Path) -> dict[str, Path]:
    """The finished runs directly under ``folder``: settings key -> run folder. Folders that
    are not finished runs, or whose files cannot be read, are passed over."""
    out: dict[str, Path] = {}
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            status, _ = runrecord.folder_status(run_dir)
            if status != runrecord.FINISHED:
                continue
            config = runrecord.read_json(run_dir / runrecord.CONFIG, "run config").get("config")
        except (CapscaleError, OSError, AttributeError):
            continue
        if isinstance(config, dict):
            out.setdefault(_key(config), run_dir)
    return out


def reusable(spec, root: Path, sources) -> dict[str, Path]:
    """Pending runs of ``spec`` (no folder in ``root`` yet) that a finished run in one of the
    ``sources`` folders already computed: run name -> that run's folder (the first source
    that has it)."""
    index: dict[str, Path] = {}
    for source in map(Path, sources):
        if not source.is_dir():
            raise CapscaleError(f"--reuse {source}: not a folder; give a sweep or study folder "
                                "that holds run folders")
        if source.resolve() == root.resolve():
            continue
        for key, run_dir in finished_runs(source).items():
            index.setdefault(key, run_dir)
    found = {}
    for run in spec.runs:
        if (root / run.name).exists():
            continue
        hit = index.get(_key(run.config.to_dict()))
        if hit is not None:
            found[run.name] = hit
    return found


def take_finished(found: dict[str, Path], root: Path) -> None:
    """Copy each found run into ``root`` under its name here, atomically, without checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    for name, source in found.items():
        tmp = root / f".{name}.reuse"  # a copy cut short by a kill is replaced next time
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(runrecord.CHECKPOINTS))
        atomic_write_json(tmp / runrecord.REUSED, {"from": str(source.resolve())})
        os.rename(tmp, root / name)
