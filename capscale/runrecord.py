"""The run record: what a run folder holds and what its result says, in one place.

A run of the trainer is a folder:

    RUN_DIR/
      config.json      the TrainConfig and the derived RunPlan (written once, at the start)
      metrics.jsonl    one JSON object per line: {"kind": "train", ...} or {"kind": "val", ...}
      checkpoints/     see capscale.train.checkpoint
      result.json      written atomically when the run ends; its absence means "unfinished"

The result record is one flat JSON object; ``result_row`` turns it into a row of the runs
table, whose contract columns (``ROW_COLUMNS``) come first. A quantity of one operand is
named ``WHAT_OPERAND`` in a record (``gmse_w``, ``gmse_a``, ``kind_w``, ``bits_a``);
tables from elsewhere may name it ``OPERAND_WHAT`` (``w_gmse``, ``a_kind``, ``w_bits``),
and every reader accepts both (``part_column_names``).

Standard library only (no torch, no pandas at import): the laws, the report and a sweep's
bookkeeping read runs without importing the trainer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from capscale.errors import CapscaleError

# ---------------------------------------------------------------- the folder

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESULT = "result.json"
# in a run folder taken from another sweep's folder instead of trained again: where it came from
REUSED = "reused.json"

# ---------------------------------------------------------------- statuses

# what a result record's "status" says
FINISHED = "finished"
DIVERGED = "diverged"
# what the trainer returns when a stop signal ended the run at a checkpoint: no record is
# written, so the run resumes from that checkpoint
INTERRUPTED = "interrupted"
# a folder with a config and no result record (it resumes from its latest checkpoint)
UNFINISHED = "unfinished"
# a run of a sweep whose folder holds no config yet
PENDING = "pending"
# where a run of a sweep stands, from its folder alone (``folder_status``)
FOLDER_STATUSES = (FINISHED, DIVERGED, UNFINISHED, PENDING)
# the statuses of a runs table (ours or anyone's) that mean a run finished normally
OK_STATUSES = frozenset({"ok", "done", FINISHED, "complete", "completed", "success"})

# ---------------------------------------------------------------- keys and columns

REQUIRED_COLUMNS = ("N", "D", "loss")
# the representation: one ``format`` for the whole model, or ``w_format`` and ``a_format``
FORMAT = "format"
OPERAND_FORMAT_COLUMNS = ("w_format", "a_format")
REPRESENTATION_COLUMNS = (FORMAT, *OPERAND_FORMAT_COLUMNS)
OPERANDS = ("w", "a")  # weights, activations: the first letter of their format column
# training settings (TrainConfig's names) a study may key its representations on, e.g. LSQ
# against trust estimation, or LSQ with its scales at another rate: runs that differ in them
# are different representations
TRAINING_KEY_COLUMNS = ("grad", "sparse_grad", "scale_lr")


def operand_key(what: str, operand: str) -> str:
    """The record's name of a quantity of one operand: ``operand_key("gmse", "w")`` is
    ``gmse_w``. This is the name the trainer writes."""
    return f"{what}_{operand}"


def operand_alias(what: str, operand: str) -> str:
    """The other spelling of ``operand_key``, read wherever a table is read: ``w_gmse``."""
    return f"{operand}_{what}"


GMSE = "gmse"
GMSE_W, GMSE_A = (operand_key(GMSE, p) for p in OPERANDS)
# the other spelling of each per-operand GMSE -> its name in a record
GMSE_ALIASES = {operand_alias(GMSE, p): operand_key(GMSE, p) for p in OPERANDS}

# the runs-table contract (README, "Scaling-law fits"): the first columns of a row of our runs
ROW_COLUMNS = (
    *REQUIRED_COLUMNS, *OPERAND_FORMAT_COLUMNS, GMSE, GMSE_W, GMSE_A, "seed", "status",
)
# what a run was and how it ended, in either shape of table (the report's runs table)
SUMMARY_COLUMNS = (*REQUIRED_COLUMNS, *REPRESENTATION_COLUMNS, "seed", "status")


def part_key(part_column: str, what: str) -> str:
    """The record's name of ``what`` (gmse, kind, bits, plugin) of the part in column
    ``part_column``: ``format`` -> ``gmse``, ``w_format`` -> ``gmse_w``."""
    return what if part_column == FORMAT else operand_key(what, part_column[0])


def part_column_names(part_column: str, what: str) -> tuple[str, ...]:
    """The names a table may hold ``what`` (gmse, kind, bits, method) of the part in column
    ``part_column`` under, in the order they are looked for: ``format`` -> (``gmse``,);
    ``w_format`` -> (``w_gmse``, ``gmse_w``)."""
    if part_column == FORMAT:
        return (what,)
    operand = part_column[0]
    return operand_alias(what, operand), operand_key(what, operand)


def quantity_columns(what: str) -> tuple[str, ...]:
    """Every name a table may hold ``what`` under: the whole model's, then per operand in
    both spellings (``gmse``, ``w_gmse``, ``a_gmse``, ``gmse_w``, ``gmse_a``)."""
    return (what, *(operand_alias(what, p) for p in OPERANDS),
            *(operand_key(what, p) for p in OPERANDS))


# ---------------------------------------------------------------- dense or not

# the names of the uncompressed representation (bf16): the format parser reads a spec as
# uncompressed exactly when, lower-cased and without spaces, it is one of its dense names
# (capscale.formats.spec.DENSE_NAMES, all among these)
DENSE_ALIASES = frozenset({"none", "dense", "bf16", "bfloat16", "fp16", "float16", "fp32",
                           "float32", "nocompression"})


def is_dense(spec: str | None) -> bool:
    """True for the uncompressed representation (``none`` and its aliases).

    Decided from the text alone, without the formats library (and torch): every other spec
    the format parser accepts has a compressing part."""
    if spec is None:
        return True
    return str(spec).strip().lower().replace(" ", "") in DENSE_ALIASES


def is_dense_run(*specs: str | None) -> bool:
    """A run is dense when every operand's representation is (``is_dense``)."""
    return all(is_dense(s) for s in specs)


# ---------------------------------------------------------------- reading


def read_json(path: str | Path, what: str | None = None):
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


def read_result(run_dir: str | Path) -> dict | None:
    """The run's result record, or None when the run has not ended."""
    path = Path(run_dir) / RESULT
    if not path.exists():
        return None
    result = read_json(path, "run result")
    if not isinstance(result, dict):
        raise CapscaleError(f"run result {path} holds a {type(result).__name__}, not a run's "
                            "record; move the file away to run the run again")
    return result


def folder_status(run_dir: str | Path) -> tuple[str, dict | None]:
    """Where a run stands from its folder alone, and its result record when it has one:
    ``finished`` or ``diverged`` (a record), ``unfinished`` (a config, no record) or
    ``pending`` (neither)."""
    result = read_result(run_dir)
    if result is not None:
        return (DIVERGED if result.get("status") == DIVERGED else FINISHED), result
    if (Path(run_dir) / CONFIG).exists():
        return UNFINISHED, None
    return PENDING, None


# ---------------------------------------------------------------- rows


def result_row(result: Mapping) -> dict:
    """Flatten a result record into one runs-table row (the contract columns first).

    ``gmse`` is the GMSE of the one compressed operand when only weights or only
    activations are compressed, and NaN when both are (then gmse_w and gmse_a hold both).
    """
    nan = float("nan")

    def num(key):
        v = result.get(key)
        return nan if v is None else v

    w, a = result.get("w_format", "none"), result.get("a_format", "none")
    gmse_w, gmse_a = num(GMSE_W), num(GMSE_A)
    if a == "none":
        gmse = gmse_w
    elif w == "none":
        gmse = gmse_a
    else:
        gmse = nan
    row = {
        "N": result.get("N"), "D": result.get("D"), "loss": num("loss"),
        "w_format": w, "a_format": a, GMSE: gmse, GMSE_W: gmse_w, GMSE_A: gmse_a,
        "seed": result.get("seed"), "status": result.get("status"),
    }
    for k, v in result.items():
        if k not in row and not isinstance(v, (dict, list)):
            row[k] = v
    return row


def runs_frame(rows: list[dict], extra_columns: tuple[str, ...] = ()):
    """Runs-table rows as a DataFrame, the contract columns first (their names alone, plus
    ``extra_columns``, when there are no rows)."""
    import pandas as pd

    if not rows:
        return pd.DataFrame(columns=[*ROW_COLUMNS, *extra_columns])
    df = pd.DataFrame(rows)
    front = [c for c in ROW_COLUMNS if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def json_safe(obj):
    """NaN/inf are not JSON: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
