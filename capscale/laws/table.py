"""The runs table: loading, renaming, derived columns and validation.

One row per training run. Canonical columns: ``N`` (non-embedding parameters), ``D``
(training tokens), ``loss`` (final validation loss) and the representation, either
``format`` (one spec for the whole model) or ``w_format`` and ``a_format`` (weights,
activations). Optional: ``gmse`` / ``gmse_w`` / ``gmse_a``, ``kind`` / ``w_kind`` /
``a_kind``, ``sparsity``, ``bits`` / ``w_bits`` / ``a_bits``, ``seed``, ``status``,
``method`` (a per-operand column may be named either way, ``gmse_w`` as the trainer's result
records do or ``w_gmse``: :mod:`capscale.runrecord`). Whatever produced the runs (our
trainer, a paper's CSV, a user's cluster), this module turns it into that shape and says
clearly what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from capscale import runrecord
from capscale.errors import CapscaleError
from capscale.runrecord import OK_STATUSES, REPRESENTATION_COLUMNS, TRAINING_KEY_COLUMNS  # noqa: F401  (re-exported)
from capscale.runrecord import REQUIRED_COLUMNS as REQUIRED
from capscale.runrecord import RESULT as RUN_RECORD

BUILTIN_PREFIX = "builtin:"


@dataclass
class TableReport:
    """What validation found: bad rows by reason, and whether they were dropped."""

    n_rows: int
    bad: dict[str, list[int]] = field(default_factory=dict)
    dropped: bool = False

    @property
    def n_bad(self) -> int:
        return len({i for rows in self.bad.values() for i in rows})

    def describe(self) -> str:
        if not self.bad:
            return f"{self.n_rows} rows, all valid"
        parts = [f"{reason}: rows {_short_list(rows)}" for reason, rows in self.bad.items()]
        verb = "dropped" if self.dropped else "found"
        return f"{self.n_rows} rows, {self.n_bad} bad rows {verb} ({'; '.join(parts)})"

    def to_dict(self) -> dict:
        return {"n_rows": self.n_rows, "bad": self.bad, "dropped": self.dropped}


def _short_list(rows: list[int], n: int = 8) -> str:
    head = ", ".join(str(r) for r in rows[:n])
    return head + (f", ... ({len(rows)} in all)" if len(rows) > n else "")


# ---------------------------------------------------------------- reading


def read_table(source: str | os.PathLike) -> pd.DataFrame:
    """Read a runs table as it is on disk: CSV, Parquet, JSON lines, a JSON list of records,
    a folder of run folders (each with a ``result.json``), or ``builtin:NAME``."""
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        from capscale.laws.datasets import load_builtin

        return load_builtin(text[len(BUILTIN_PREFIX) :])
    path = Path(source)
    if not path.exists():
        raise CapscaleError(
            f"runs table {text!r} does not exist; give a .csv, .parquet, .jsonl or .json file, "
            f"a folder of run folders, or {BUILTIN_PREFIX}NAME for a dataset shipped with capscale"
        )
    if path.is_dir():
        return _read_run_folders(path)
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix == ".json":
            with open(path, encoding="utf-8") as f:
                obj = json.load(f)
            records = obj if isinstance(obj, list) else obj.get("runs") if isinstance(obj, dict) else None
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise CapscaleError(
                    f"{path}: a JSON runs table must be a list of records (or {{'runs': [...]}})"
                )
            return pd.json_normalize(records, sep=".")
    except CapscaleError:
        raise
    except (ValueError, OSError, ImportError) as e:
        raise CapscaleError(f"cannot read runs table {path}: {e}") from e
    raise CapscaleError(
        f"runs table {path}: unknown suffix {suffix!r}; use .csv, .tsv, .parquet, .jsonl or .json"
    )


def _read_run_folders(root: Path) -> pd.DataFrame:
    """One row per run folder under ``root`` that holds a result record; unfinished runs
    (no record) are counted and named, not read."""
    records, unfinished = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if RUN_RECORD in filenames:
            rec = dict(runrecord.read_result(dirpath) or {})
            rec.setdefault("run", os.path.relpath(dirpath, root))
            records.append(rec)
            dirnames[:] = []  # a run folder's subfolders (checkpoints) are not runs
        elif runrecord.CONFIG in filenames:
            unfinished.append(os.path.relpath(dirpath, root))
            dirnames[:] = []
    if not records:
        hint = f" ({len(unfinished)} unfinished run folders without {RUN_RECORD})" if unfinished else ""
        raise CapscaleError(f"{root}: no run folder with a {RUN_RECORD} record found{hint}")
    df = pd.json_normalize(records, sep=".")
    df.attrs["unfinished_runs"] = unfinished
    return df


# ---------------------------------------------------------------- renaming and deriving


def parse_mapping(items: str | list[str] | dict | None) -> dict[str, str]:
    """``"N=non_embedding_params,D=tokens"`` (or a list of such, or a dict) -> {new: old}."""
    if not items:
        return {}
    if isinstance(items, dict):
        return dict(items)
    if isinstance(items, str):
        items = [items]
    out = {}
    for item in items:
        for pair in str(item).split(","):
            pair = pair.strip()
            if not pair:
                continue
            if "=" not in pair:
                raise CapscaleError(f"--map {pair!r}: write NEW=OLD, e.g. N=non_embedding_params")
            new, old = (s.strip() for s in pair.split("=", 1))
            if not new or not old:
                raise CapscaleError(f"--map {pair!r}: both sides of '=' must name a column")
            if new in out:
                raise CapscaleError(f"--map names {new!r} twice ({new}={out[new]}, {pair}); "
                                    "give each new column one source")
            out[new] = old
    return out


def apply_mapping(df: pd.DataFrame, mapping: dict[str, str]) -> pd.DataFrame:
    """Rename columns old -> new; the old names must exist."""
    if not mapping:
        return df
    missing = [old for old in mapping.values() if old not in df.columns]
    if missing:
        raise CapscaleError(
            f"--map names columns that the table does not have: {missing}; "
            f"its columns are {list(df.columns)}"
        )
    df = df.copy()
    for new, old in mapping.items():
        df[new] = df[old]
    return df


def derive_column(df: pd.DataFrame, expression: str) -> pd.DataFrame:
    """Add a column from ``NAME=EXPR``: arithmetic (+ - * / **) over columns, numbers and
    the functions of :mod:`capscale.laws.expr`, e.g. ``D=C/(6*N)``. Column names that are not
    identifiers can be written in backquotes: ``D=`Training FLOP`/(6*N)``. The expression is
    evaluated by :mod:`capscale.laws.expr`, never by Python."""
    from capscale.laws import expr as expr_mod

    what = f"--derive {expression!r}"
    if not isinstance(expression, str) or "=" not in expression:
        raise CapscaleError(f"{what}: write NAME=EXPRESSION, e.g. D=C/(6*N)")
    name, expr = (s.strip() for s in expression.split("=", 1))
    if name.startswith("`") and name.endswith("`") and len(name) > 2:
        name = name[1:-1]
    if not name or any(c in name for c in "`=\n\r\t"):
        raise CapscaleError(f"{what}: the new column needs a name before '=', e.g. D=C/(6*N)")
    values = expr_mod.compute(df, expr, what)
    if len(df) and not np.isfinite(values).any():
        raise CapscaleError(f"{what}: yields no finite value in any row (e.g. log of a "
                            "negative number, a column that is not numeric)")
    df = df.copy()
    df[name] = values
    return df


# ---------------------------------------------------------------- validation


def representation_columns(df: pd.DataFrame) -> list[str]:
    """The columns that name a run's representation: ``format``, or ``w_format`` + ``a_format``."""
    operands = [c for c in runrecord.OPERAND_FORMAT_COLUMNS if c in df.columns]
    if operands:
        return operands
    return [runrecord.FORMAT] if runrecord.FORMAT in df.columns else []


def validate_runs(
    df: pd.DataFrame,
    *,
    required: tuple[str, ...] = REQUIRED,
    drop_bad: bool = False,
    source: str = "runs table",
) -> tuple[pd.DataFrame, TableReport]:
    """Check the canonical columns and find bad rows (missing or non-finite values,
    non-positive N, D or loss, exact duplicates, runs whose status is not a normal finish).

    Bad rows raise a :class:`CapscaleError` naming them, unless ``drop_bad`` is set, in which
    case they are dropped and listed in the report.
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CapscaleError(
            f"{source}: missing column(s) {missing}; its columns are {list(df.columns)}. "
            "Rename with --map NEW=OLD (e.g. --map N=non_embedding_params,D=tokens) "
            "or compute with --derive (e.g. --derive D=C/(6*N))"
        )
    df = df.reset_index(drop=True).copy()
    if len(df) == 0:
        raise CapscaleError(f"{source}: the table has no rows")
    for col in required:
        numeric = pd.to_numeric(df[col], errors="coerce")
        df[col] = numeric.astype(np.float64)
    for col in representation_columns(df):
        df[col] = df[col].map(lambda v: v if isinstance(v, str) else (None if _isnan(v) else str(v)))
    bad: dict[str, list[int]] = {}
    for col in required:
        v = df[col].to_numpy()
        nonfinite = ~np.isfinite(v)
        if nonfinite.any():
            bad[f"{col} missing or not finite"] = np.flatnonzero(nonfinite).tolist()
        nonpos = np.isfinite(v) & (v <= 0)
        if nonpos.any():
            bad[f"{col} <= 0"] = np.flatnonzero(nonpos).tolist()
    for col in representation_columns(df):
        empty = df[col].isna().to_numpy()
        if empty.any():
            bad[f"{col} empty"] = np.flatnonzero(empty).tolist()
    if "status" in df.columns:
        status = df["status"].astype(str).str.lower()
        not_ok = ~status.isin(OK_STATUSES) & df["status"].notna().to_numpy()
        if not_ok.any():
            bad["status not finished (e.g. diverged)"] = np.flatnonzero(not_ok.to_numpy()).tolist()
    _check_plugin_versions(df, source)
    key = [c for c in (*required, *representation_columns(df), "seed", "method",
                       *TRAINING_KEY_COLUMNS) if c in df.columns]
    dup = df.duplicated(subset=key, keep="first").to_numpy()
    if dup.any():
        bad["duplicate of an earlier row"] = np.flatnonzero(dup).tolist()
    report = TableReport(n_rows=len(df), bad=bad)
    if bad:
        if not drop_bad:
            raise CapscaleError(
                f"{source}: {report.describe()}. Fix them, or drop them with --drop-bad "
                "(drop_bad=True)"
            )
        rows = sorted({i for r in bad.values() for i in r})
        df = df.drop(index=rows).reset_index(drop=True)
        report.dropped = True
        if len(df) == 0:
            raise CapscaleError(f"{source}: every row is bad ({report.describe()}); nothing to fit")
    return df, report


def _check_plugin_versions(df: pd.DataFrame, source: str) -> None:
    """One user format name, one version: runs of ``myfp4`` trained with two versions of its
    plugin (``plugin_w`` = ``myfp4@<source hash>`` in the trainer's records) are not one format."""
    for col in representation_columns(df):
        pcol = runrecord.part_key(col, "plugin")  # plugin, plugin_w
        if pcol not in df.columns:
            continue
        sub = df[[col, pcol]].dropna()
        for spec, versions in sub.groupby(col)[pcol]:
            found = sorted(set(versions.astype(str)))
            if len(found) > 1:
                raise CapscaleError(
                    f"{source}: {col} {spec!r} comes from {len(found)} versions of its plugin "
                    f"({', '.join(found)}); a fit would mix them: keep one (--where) or register "
                    "the new version under a new name")


def _isnan(v) -> bool:
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return False


def load_runs(
    source: str | os.PathLike | pd.DataFrame,
    *,
    mapping: str | list[str] | dict | None = None,
    derive: str | list[str] | None = None,
    drop_bad: bool = False,
    where: str | None = None,
    required: tuple[str, ...] = REQUIRED,
) -> pd.DataFrame:
    """Read, rename (``mapping``: {new: old} or ``"N=old,D=old"``), derive columns
    (``derive``: ``"D=C/(6*N)"``, applied in order), select rows (``where``: a condition in
    the language of :mod:`capscale.laws.expr`, e.g. ``"tokens_per_param > 90"``) and validate a runs table.

    Returns the validated DataFrame; the validation report is in ``df.attrs["report"]``.
    """
    if isinstance(source, pd.DataFrame):
        df, name = source.copy(), "runs table"
    else:
        df, name = read_table(source), str(source)
    derive = [derive] if isinstance(derive, str) else list(derive or [])
    # how the table was read, so that a fit JSON can read it again the same way
    selection = None if isinstance(source, pd.DataFrame) else {
        "table": str(source), "map": parse_mapping(mapping), "derive": derive, "where": where}
    df = apply_mapping(df, parse_mapping(mapping))
    for expr in derive:
        df = derive_column(df, expr)
    if where:
        from capscale.laws.expr import select

        attrs = dict(df.attrs)
        df = select(df, where)
        df.attrs.update(attrs)
        if len(df) == 0:
            raise CapscaleError(f"--where {where!r} selects no runs")
        name = f"{name} where {where}"
    attrs = dict(df.attrs)
    df, report = validate_runs(df, required=required, drop_bad=drop_bad, source=name)
    df.attrs.update(attrs)
    df.attrs["report"] = report.to_dict()
    df.attrs["source"] = name
    if selection is not None:
        df.attrs["selection"] = selection
    return df


def data_hash(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A sha256 over the columns a fit used (in a canonical text form): two fits with the
    same hash saw the same numbers."""
    cols = [c for c in (columns or sorted(df.columns)) if c in df.columns]
    canon = df[cols].copy()
    for c in cols:
        if pd.api.types.is_float_dtype(canon[c]):
            canon[c] = canon[c].map(lambda v: repr(float(v)))
    text = canon.to_csv(index=False, lineterminator="\n")
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def size_groups(values: np.ndarray, rel_tol: float = 0.05) -> np.ndarray:
    """Cluster positive values that lie within ``rel_tol`` of each other (in log space) and
    return a group id per value, groups numbered by increasing value. Model sizes and
    tokens-per-parameter ratios of real sweeps are never exactly equal."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values)
    ids = np.empty(len(values), dtype=int)
    group, start = -1, None
    for i in order:
        v = values[i]
        if start is None or math.log(v / start) > math.log1p(rel_tol):
            group += 1
            start = v
        ids[i] = group
    return ids
