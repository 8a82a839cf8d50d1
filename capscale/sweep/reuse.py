"""Finished runs of other folders taken into a sweep instead of being trained again.

Studies share runs: every study's dense ladder is the same, and ``fp`` and ``lsq`` train the
same INT4/6/8 runs with trust estimation. ``--reuse DIR`` looks in other sweep or study
folders for finished runs that compute exactly what a pending run of this sweep would (the
same settings, runtime ones aside: :func:`capscale.train.records.identity`; the same compute
dtype, which ``dtype = "auto"`` resolves by device; the same user-format sources) and copies
them in, so that they are trained once. A copy is made beside its destination and renamed
into place, so a run folder is never half-copied; checkpoints are left behind (a finished run
needs none), and ``reused.json`` in the copy names the folder it came from and the one that
trained it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from capscale import runrecord
from capscale.errors import CapscaleError
from capscale.io import atomic_write_json


def _key(config: dict, compute_dtype: str, plugins: tuple) -> str:
    from capscale.train.records import identity

    return json.dumps([identity(config), compute_dtype, list(plugins)], sort_keys=True,
                      default=str)


def _plugins(formats: dict) -> tuple:
    """The user formats' names and source hashes a run record holds, per operand."""
    return tuple(formats.get(runrecord.operand_key("plugin", role)) for role in runrecord.OPERANDS)


def finished_runs(folder: Path) -> dict[str, Path]:
    """The finished runs directly under ``folder``: key -> run folder. Hidden folders (a copy
    in progress), folders that are not finished runs and folders whose files cannot be read
    are passed over."""
    out: dict[str, Path] = {}
    for run_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            status, _ = runrecord.folder_status(run_dir)
            if status != runrecord.FINISHED:
                continue
            saved = runrecord.read_json(run_dir / runrecord.CONFIG, "run config")
            config, env = saved.get("config"), saved.get("environment", {})
            key = _key(config, env.get("compute_dtype"), _plugins(saved.get("formats", {})))
        except (CapscaleError, OSError, AttributeError, TypeError):
            continue
        if isinstance(config, dict):
            out.setdefault(key, run_dir)
    return out


def compute_dtype(cfg, on_gpu: bool) -> str:
    """The dtype a run of ``cfg`` computes in (as the trainer resolves ``auto``) when its
    launcher gives it a GPU or not."""
    if cfg.dtype != "auto":
        return cfg.dtype
    gpu = cfg.device.startswith("cuda") or (cfg.device == "auto" and on_gpu)
    return "bf16" if gpu else "fp32"


def planned_plugins(cfg) -> tuple:
    """The user formats' names and source hashes a run of ``cfg`` would record."""
    from capscale.formats import parse_format
    from capscale.formats.registry import plugin_records, plugin_signature

    return tuple(plugin_signature(plugin_records(parse_format(spec)))
                 for spec in (cfg.w_format, cfg.a_format))


def reusable(spec, root: Path, sources, on_gpu: bool = False) -> dict[str, Path]:
    """Pending runs of ``spec`` (no folder in ``root`` yet) that a finished run in one of the
    ``sources`` folders already computed: run name -> that run's folder (the first source
    that has it). ``on_gpu``: whether this sweep's runs will train on a GPU."""
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
        cfg = run.config
        hit = index.get(_key(cfg.to_dict(), compute_dtype(cfg, on_gpu), planned_plugins(cfg)))
        if hit is not None:
            found[run.name] = hit
    return found


def take_finished(found: dict[str, Path], root: Path) -> int:
    """Copy each found run into ``root`` under its name here, atomically, without checkpoints
    (under the sweep's launch lock); a folder that appeared meanwhile is left as it is.
    ``reused.json`` names the source and, through copies of copies, the folder that trained
    the run. Returns how many were copied."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".*.reuse"):  # copies cut short by a kill
        shutil.rmtree(stale, ignore_errors=True)
    copied = 0
    for name, source in found.items():
        tmp = root / f".{name}.reuse"
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(runrecord.CHECKPOINTS))
        earlier = tmp / runrecord.REUSED
        origin = (runrecord.read_json(earlier, "reuse record").get("trained_in")
                  if earlier.exists() else None)
        atomic_write_json(earlier, {"from": str(source.resolve()),
                                    "trained_in": origin or str(source.resolve())})
        if (root / name).exists():
            shutil.rmtree(tmp)
            continue
        os.rename(tmp, root / name)
        copied += 1
    return copied
