"""A run is a folder; this module knows its files and turns results into table rows.

    RUN_DIR/
      config.json      the TrainConfig and the derived RunPlan (written once, at the start)
      metrics.jsonl    one JSON object per line: {"kind": "train", ...} or {"kind": "val", ...}
      checkpoints/     see capscale.train.checkpoint
      result.json      written atomically when the run ends; its absence means "unfinished"

``result_row`` flattens a result record into the runs-table columns that the laws read
(N, D, loss, w_format, a_format, gmse_w, gmse_a, seed, status, ...), and ``load_runs``
collects every finished run below a folder into a DataFrame.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from capscale.errors import CapscaleError
from capscale.io import atomic_write_json

# Settings that may differ between a run and its resumption: they change how the run is
# watched or executed, not what it computes.
RUNTIME_FIELDS = ("device", "compile", "progress", "tensorboard", "wandb_project", "out")


def identity(config_dict: dict) -> dict:
    """The settings that define what a run computes (runtime settings dropped)."""
    return {k: v for k, v in config_dict.items() if k not in RUNTIME_FIELDS}

CONFIG = "config.json"
METRICS = "metrics.jsonl"
RESULT = "result.json"

# The runs-table contract (DESIGN.md, "Conventions"), first, then the trainer's extras.
ROW_COLUMNS = (
    "N", "D", "loss", "w_format", "a_format", "gmse", "gmse_w", "gmse_a", "seed", "status",
)


def read_json(path: Path, what: str | None = None) -> dict:
    """A JSON file's contents; a missing or broken file is a CapscaleError naming ``what`` it is."""
    name = f"{what} {path}" if what else str(path)
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CapscaleError(f"{name} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CapscaleError(f"{name} is not valid JSON: {e}") from None
    except OSError as e:
        from capscale.io import describe_write_error

        raise CapscaleError(f"{name} cannot be read: {describe_write_error(e)}") from None


def load_result(run_dir: str | Path) -> dict | None:
    """The run's result record, or None when the run has not ended."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    result = read_json(path, "run result")
    if not isinstance(result, dict):
        raise CapscaleError(f"run result {path} holds a {type(result).__name__}, not a run's "
                            "record; move the file away to run the run again")
    return result


def write_result(run_dir: str | Path, result: dict) -> Path:
    return atomic_write_json(Path(run_dir) / RESULT, json_safe(result))


def json_safe(obj):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


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


def result_row(result: dict) -> dict:
    """Flatten a result record into one runs-table row (the contract columns first).

    ``gmse`` is the GMSE of the one compressed operand when only weights or only
    activations are compressed, and NaN when both are (then gmse_w and gmse_a hold both).
    """
    nan = float("nan")

    def num(key):
        v = result.get(key)
        return nan if v is None else v

    w, a = result.get("w_format", "none"), result.get("a_format", "none")
    gmse_w, gmse_a = num("gmse_w"), num("gmse_a")
    if a == "none":
        gmse = gmse_w
    elif w == "none":
        gmse = gmse_a
    else:
        gmse = nan
    row = {
        "N": result.get("N"), "D": result.get("D"), "loss": num("loss"),
        "w_format": w, "a_format": a, "gmse": gmse, "gmse_w": gmse_w, "gmse_a": gmse_a,
        "seed": result.get("seed"), "status": result.get("status"),
    }
    for k, v in result.items():
        if k not in row and not isinstance(v, (dict, list)):
            row[k] = v
    return row


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
            row = {"N": cfg.get("plan", {}).get("n_params"), "status": "unfinished",
                   "w_format": cfg.get("config", {}).get("w_format"),
                   "a_format": cfg.get("config", {}).get("a_format"),
                   "seed": cfg.get("config", {}).get("seed")}
        else:
            continue
        row["run_dir"] = str(run_dir)
        rows.append(row)
    return runs_frame(rows, ("run_dir",))


def runs_frame(rows: list[dict], extra_columns: tuple[str, ...] = ()):
    """Runs-table rows as a DataFrame, the contract columns first (their names alone, plus
    ``extra_columns``, when there are no rows)."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=[*ROW_COLUMNS, *extra_columns])
    df = pd.DataFrame(rows)
    front = [c for c in ROW_COLUMNS if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]
