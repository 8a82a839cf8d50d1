"""A run is a folder; this module writes its files and collects finished runs into a table.

The folder's files, the result record's keys and the runs-table columns are the contract of
:mod:`capscale.runrecord` (re-exported here: ``CONFIG``, ``METRICS``, ``RESULT``,
``ROW_COLUMNS``, ``load_result``, ``result_row``, ...). ``load_runs`` collects every
finished run below a folder into a DataFrame.
"""

from __future__ import annotations

import json
from pathlib import Path

from capscale.io import atomic_write_json
from capscale.runrecord import (  # noqa: F401  (re-exported)
    CONFIG,
    METRICS,
    RESULT,
    ROW_COLUMNS,
    UNFINISHED,
    json_safe,
    read_json,
    result_row,
    runs_frame,
)
from capscale.runrecord import read_result as load_result

# Settings that may differ between a run and its resumption: they change how the run is
# watched or executed, not what it computes.
RUNTIME_FIELDS = ("device", "compile", "progress", "tensorboard", "wandb_project", "out")


# Settings added after run records were first written, with the value that computes what a
# record without them computed. A record lacking one matches a run at that value, so runs
# trained before the setting existed are still found (resume, --reuse).
ADDED_SETTINGS = {"scale_lr": None}


def identity(config_dict: dict) -> dict:
    """The settings that define what a run computes (runtime settings dropped; the settings
    added since a record was written filled in as it ran)."""
    full = {**ADDED_SETTINGS, **config_dict}
    return {k: v for k, v in full.items() if k not in RUNTIME_FIELDS}


def write_result(run_dir: str | Path, result: dict) -> Path:
    return atomic_write_json(Path(run_dir) / RESULT, json_safe(result))


class MetricsLog:
    """Appends JSON lines; on resume, drops the lines written after the checkpoint."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if rec.get("step", 0) <= step:
                kept.append(line)
        from capscale.io import atomic_write_text

        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(json_safe(record)) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_runs(root: str | Path, include_unfinished: bool = False):
    """A DataFrame with one row per run folder below ``root`` that has a result record.

    With ``include_unfinished``, folders with a config but no result appear with
    status "unfinished" (and no loss), so a sweep can see what is left to do.
    """
    root = Path(root)
    rows = []
    for cfg_path in sorted(root.rglob(CONFIG)):
        run_dir = cfg_path.parent
        result = load_result(run_dir)
        if result is not None:
            row = result_row(result)
        elif include_unfinished:
            cfg = read_json(cfg_path)
            row = {"N": cfg.get("plan", {}).get("n_params"), "status": UNFINISHED,
                   "w_format": cfg.get("config", {}).get("w_format"),
                   "a_format": cfg.get("config", {}).get("a_format"),
                   "seed": cfg.get("config", {}).get("seed")}
        else:
            continue
        row["run_dir"] = str(run_dir)
        rows.append(row)
    return runs_frame(rows, ("run_dir",))
