"""Where a sweep stands: each run's status from its folder, the manifest, and the tables.

A run is *finished* or *diverged* when its result record exists, *unfinished* when its folder
holds a config but no result (it resumes from its latest checkpoint), *pending* otherwise
(:func:`capscale.runrecord.folder_status`). At the end of a sweep two tables are written
beside the runs:

- ``runs.csv``: one row per finished run in the trainer's runs-table columns (N, D, loss,
  w_format, a_format, gmse, ...), ready for ``capscale fit``;
- ``sweep-status.csv``: every run of the spec with its status, loss and folder.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from pathlib import Path

import pandas as pd

from capscale import runrecord
from capscale.errors import CapscaleError
from capscale.io import atomic_write_json, write_table
from capscale.runrecord import FOLDER_STATUSES as STATUSES  # noqa: F401  (re-exported)
from capscale.runrecord import folder_status as run_status
from capscale.sweep.spec import PlannedRun, SweepSpec
from capscale.sweep.worker import MANIFEST

RUNS_TABLE = "runs.csv"
STATUS_TABLE = "sweep-status.csv"


def progress_of(run_dir: Path) -> int:
    """Steps done by a run: the last step in its metrics (0 when none)."""
    path = run_dir / runrecord.METRICS
    if not path.exists():
        return 0
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line).get("step", 0))
        except (json.JSONDecodeError, ValueError, AttributeError):
            continue
    return 0


def status_table(spec: SweepSpec, root: Path) -> pd.DataFrame:
    """One row per run of the spec: name, status, N, D, formats, seed, loss, folder."""
    rows = []
    for run in spec.runs:
        status, result = run_status(root / run.name)
        cfg = run.config
        rows.append({"name": run.name, "status": status, "N": run.n_params, "D": run.tokens,
                     "steps": run.steps, "size": cfg.size, "w_format": cfg.w_format,
                     "a_format": cfg.a_format, "seed": cfg.seed,
                     "tokens_per_param": run.tokens / run.n_params,
                     "loss": (result or {}).get("loss"),
                     "wall_time_s": (result or {}).get("wall_time_s"),
                     "run_dir": str(root / run.name)})
    return pd.DataFrame(rows)


def runs_table(spec: SweepSpec, root: Path) -> pd.DataFrame:
    """The finished runs of the spec as runs-table rows (the contract columns first)."""
    rows = []
    for run in spec.runs:
        result = runrecord.read_result(root / run.name)
        if result is not None and result.get("status") == runrecord.FINISHED:
            row = runrecord.result_row(result)
            for key in runrecord.TRAINING_KEY_COLUMNS:  # records written before they held them
                row.setdefault(key, getattr(run.config, key))
            row["run"] = run.name
            row["run_dir"] = str(root / run.name)
            rows.append(row)
    return runrecord.runs_frame(rows, ("run", "run_dir"))


def write_tables(spec: SweepSpec, root: Path) -> tuple[Path, Path, pd.DataFrame]:
    status = status_table(spec, root)
    runs = runs_table(spec, root)
    return (write_table(runs, root / RUNS_TABLE), write_table(status, root / STATUS_TABLE),
            status)


def runs_key(spec: SweepSpec) -> str:
    """A hash of what the spec's runs compute: two launches with the same key train the
    same runs."""
    from capscale.train.records import identity

    runs = [{"name": r.name, "config": identity(r.config.to_dict())} for r in spec.runs]
    text = json.dumps(runs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_manifest(spec: SweepSpec, root: Path, extra: dict | None = None) -> Path:
    """The expanded spec, which workers read their run's config from: written atomically to
    ``ROOT/sweep.json`` (the latest launch, for people and tools) and, once, to
    ``ROOT/.sweep-KEY.json``, which is never rewritten and which this launch's workers read,
    so that a worker trains exactly the runs of the launch that started it. Returns the latter."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"name": spec.name, "spec": spec.source, "spec_sha256": spec.sha256,
                "runs_key": runs_key(spec), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "runs": [r.to_dict() for r in spec.runs], **(extra or {})}
    atomic_write_json(root / MANIFEST, manifest)
    fixed = root / f".sweep-{manifest['runs_key']}.json"
    if not fixed.exists():
        atomic_write_json(fixed, manifest)
    return fixed


def changed_runs(spec: SweepSpec, root: Path) -> dict[str, str]:
    """Runs whose folder holds a run with other settings than the spec's: name -> the
    settings that differ."""
    from capscale.sweep.worker import differing_settings

    out = {}
    for run in spec.runs:
        cfg = copy.copy(run.config)
        cfg.out = str(root / run.name)
        diff = differing_settings(cfg)
        if diff:
            out[run.name] = diff
    return out


def check_unchanged(spec: SweepSpec, root: Path) -> None:
    """Refuse a spec whose runs' folders hold runs of other settings: their results are not
    this spec's results (a spec edited after its sweep ran)."""
    changed = changed_runs(spec, root)
    if not changed:
        return
    shown = "; ".join(f"{name} ({diff})" for name, diff in list(changed.items())[:4])
    more = f"; and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise CapscaleError(
        f"{len(changed)} run folder(s) in {root} hold runs with other settings than the spec "
        f"{spec.source} gives them: {shown}{more}. The spec changed after these runs started; "
        "restore the spec, sweep into another folder (--out), or move those folders away")


def order_for_launch(runs: list[PlannedRun], vocab_size: int) -> list[PlannedRun]:
    """Longest first: with several runs at once, the sweep then ends soonest (LPT rule)."""
    return sorted(runs, key=lambda r: -r.flops(vocab_size))
