"""Where a sweep stands: each run's status from its folder, the manifest, and the tables.

A run is *finished* or *diverged* when its result record exists, *unfinished* when its folder
holds a config but no result (it resumes from its latest checkpoint), *pending* otherwise.
At the end of a sweep two tables are written beside the runs:

- ``runs.csv``: one row per finished run in the trainer's runs-table columns (N, D, loss,
  w_format, a_format, gmse, ...), ready for ``capscale fit``;
- ``sweep-status.csv``: every run of the spec with its status, loss and folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from capscale.io import atomic_write_json, write_table
from capscale.sweep.spec import PlannedRun, SweepSpec
from capscale.sweep.worker import MANIFEST
from capscale.train import records

RUNS_TABLE = "runs.csv"
STATUS_TABLE = "sweep-status.csv"
STATUSES = ("finished", "diverged", "unfinished", "pending")


def run_status(run_dir: Path) -> tuple[str, dict | None]:
    result = records.load_result(run_dir)
    if result is not None:
        return ("diverged" if result.get("status") == "diverged" else "finished"), result
    if (run_dir / records.CONFIG).exists():
        return "unfinished", None
    return "pending", None


def progress_of(run_dir: Path) -> int:
    """Steps done by a run: the last step in its metrics (0 when none)."""
    path = run_dir / records.METRICS
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
        result = records.load_result(root / run.name)
        if result is not None and result.get("status") == "finished":
            row = records.result_row(result)
            row["run"] = run.name
            row["run_dir"] = str(root / run.name)
            rows.append(row)
    return records.runs_frame(rows, ("run", "run_dir"))


def write_tables(spec: SweepSpec, root: Path) -> tuple[Path, Path, pd.DataFrame]:
    status = status_table(spec, root)
    runs = runs_table(spec, root)
    return (write_table(runs, root / RUNS_TABLE), write_table(status, root / STATUS_TABLE),
            status)


def write_manifest(spec: SweepSpec, root: Path, extra: dict | None = None) -> Path:
    """``ROOT/sweep.json``: the expanded spec, which workers read their run's config from.
    Written atomically; rewritten on every launch so that a grown spec reaches its workers."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"name": spec.name, "spec": spec.source, "spec_sha256": spec.sha256,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "runs": [r.to_dict() for r in spec.runs], **(extra or {})}
    return atomic_write_json(root / MANIFEST, manifest)


def order_for_launch(runs: list[PlannedRun], vocab_size: int) -> list[PlannedRun]:
    """Longest first: with several runs at once, the sweep then ends soonest (LPT rule)."""
    return sorted(runs, key=lambda r: -r.flops(vocab_size))
