"""What the laws need to know about a run's representation: its key, whether it is dense,
its parts and, per part, the GMSE, compression kind and bits per value.

Specs are looked up lazily in ``capscale.formats`` / ``capscale.capacity``; a table may
instead carry the numbers itself (``gmse``, ``gmse_w`` or ``w_gmse``, ``kind``, ``w_bits``,
...), which is how foreign data with free labels is fitted. Which specs are dense and what a
per-operand column is called are the run record's (:mod:`capscale.runrecord`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws.table import representation_columns
from capscale.runrecord import (  # noqa: F401  (DENSE_ALIASES, is_dense re-exported)
    DENSE_ALIASES,
    is_dense,
    is_dense_run,
    part_column_names,
)

DENSE_BITS = 16.0
KEY_SEPARATOR = "/"


def is_dense_key(key: str) -> bool:
    """Whether a representation key (``none/none``, ``int4``) names a dense run."""
    return is_dense_run(*str(key).split(KEY_SEPARATOR))


def _parse(spec: str, what: str):
    try:
        from capscale.formats import parse_format
    except ImportError as e:
        raise CapscaleError(
            f"the {what} of format {spec!r} needs capscale.formats, which is not available here; "
            f"give it as a column instead"
        ) from e
    return parse_format(spec)


@functools.lru_cache(maxsize=4096)
def spec_gmse(spec: str) -> float:
    """GMSE of a format spec from the capacity probe (cached)."""
    if is_dense(spec):
        return 0.0
    try:
        from capscale.capacity import gmse
    except ImportError as e:
        raise CapscaleError(
            f"the GMSE of format {spec!r} needs capscale.capacity, which is not available here; "
            "add a gmse column (or gmse_w / gmse_a) to the runs table"
        ) from e
    return float(gmse(spec).gmse)


@functools.lru_cache(maxsize=4096)
def spec_kind(spec: str) -> str:
    """Compression type of a spec (``scalar``, ``sparse``, ``sparse+scalar``, ``vector``, ...)."""
    if is_dense(spec):
        return "dense"
    return str(_parse(spec, "compression kind").kind)


@functools.lru_cache(maxsize=4096)
def spec_bits(spec: str) -> float:
    """Honest storage bits per value of a spec (16 for dense bf16)."""
    if is_dense(spec):
        return DENSE_BITS
    bits = float(_parse(spec, "bits per value").bits_per_value)
    if not math.isfinite(bits):
        raise CapscaleError(f"format {spec!r} has no storage cost (noise injection): no bits per value")
    return bits


def split_components(spec: str) -> list[str]:
    """``sparse0.5+int4:had`` -> [``sparse0.5``, ``int4:had``]: the parts of a composition."""
    return [p for p in str(spec).split("+") if p]


def part_columns(df: pd.DataFrame) -> list[str]:
    cols = representation_columns(df)
    if not cols:
        raise CapscaleError(
            "this law needs the representation of every run: a 'format' column, or "
            f"'w_format' and 'a_format'; the table has {list(df.columns)}"
        )
    return cols


def _companion(df: pd.DataFrame, part_col: str, what: str) -> str | None:
    """The column holding ``what`` (gmse, kind, bits) for a part: ``w_format`` -> ``w_gmse``
    or ``gmse_w``; ``format`` -> ``gmse``."""
    return next((n for n in part_column_names(part_col, what) if n in df.columns), None)


MISSING_KEY = "default"  # how a key column's missing value (a setting at its default) reads


def representation_keys(df: pd.DataFrame, key_columns: list[str] | None = None) -> list[str]:
    """One key per row naming its representation: the spec (``format`` tables), ``w/a`` (e.g.
    ``int4:had/none``), or the values of ``key_columns`` joined by ``/``."""
    cols = key_columns or part_columns(df)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise CapscaleError(f"eff key column(s) {missing} are not in the table {list(df.columns)}")
    def text(c):  # a training setting left at its default is missing (None, NaN): "default"
        return df[c].astype(object).where(df[c].notna(), MISSING_KEY).astype(str)

    keys = text(cols[0])
    for c in cols[1:]:
        keys = keys + KEY_SEPARATOR + text(c)
    return keys.tolist()


def _per_value(values, fn, dtype=object) -> np.ndarray:
    """``fn`` applied once to each distinct value of ``values``, spread back over the rows
    (a runs table has many rows and few representations)."""
    seen: dict = {}
    out = []
    for v in values:
        try:
            r = seen[v]
        except KeyError:
            r = seen[v] = fn(v)
        except TypeError:  # an unhashable cell: computed as it is
            r = fn(v)
        out.append(r)
    if dtype is object:  # one cell per row even where the values are tuples
        arr = np.empty(len(out), dtype=object)
        arr[:] = out
        return arr
    return np.array(out, dtype=dtype)


def dense_rows(df: pd.DataFrame) -> np.ndarray:
    """Rows whose every part is uncompressed."""
    out = np.ones(len(df), dtype=bool)
    for c in part_columns(df):
        out &= _per_value(df[c].tolist(), is_dense, dtype=bool)
    return out


def part_table(df: pd.DataFrame, *, split_composed: bool = False) -> list[dict]:
    """The compressed parts of each run, for the capacity law.

    Returns one dict per part slot: ``{"name", "gmse" (n,), "kind" (n,) object, "method"
    (n,) object or None}``, where a dense part has gmse 0 and kind ``dense``. With ``split_composed``, a composed spec
    (``2:4+int4``) counts as several parts whose capacities multiply.
    """
    cols = part_columns(df)
    slots: list[dict] = []
    for col in cols:
        specs = df[col].astype(str).tolist()
        gcol, kcol = _companion(df, col, "gmse"), _companion(df, col, "kind")
        methods = part_methods(df, col)
        given_g = (pd.to_numeric(df[gcol], errors="coerce").to_numpy(np.float64) if gcol
                   else np.full(len(specs), np.nan))
        given_k = (df[kcol].astype(object).to_numpy() if kcol
                   else np.full(len(specs), None, dtype=object))
        n_comp = max(len(split_components(s)) for s in specs) if split_composed else 1
        given_g_ok = np.isfinite(given_g)
        given_k_ok = _per_value(given_k, lambda v: isinstance(v, str) and bool(v), dtype=bool)
        for j in range(n_comp):
            # per distinct spec: the part in slot j (None where dense or absent) and whether
            # it is one piece of a composition (then the spec decides, not the given columns)
            slot = _per_value(specs, lambda s, j=j: _slot_part(s, j, split_composed))
            dense = np.array([p is None for p in slot], dtype=bool)
            part = np.array([p[0] if p else "" for p in slot], dtype=object)
            composed = np.array([bool(p and p[1]) for p in slot], dtype=bool)
            g = np.zeros(len(specs))
            use_g = ~dense & ~composed & given_g_ok
            g[use_g] = given_g[use_g]
            need = ~dense & ~use_g
            g[need] = _per_value(part[need], spec_gmse, dtype=np.float64)
            kinds = np.full(len(specs), "dense", dtype=object)
            use_k = ~dense & ~composed & given_k_ok
            kinds[use_k] = given_k[use_k]
            need = ~dense & ~use_k
            kinds[need] = _per_value(part[need], spec_kind)
            name = col if n_comp == 1 else f"{col}[{j}]"
            slots.append({"name": name, "gmse": g, "kind": kinds, "method": methods})
    for slot in slots:
        comp = slot["kind"] != "dense"
        bad = comp & ~((slot["gmse"] > 0) & (slot["gmse"] < 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CapscaleError(
                f"{slot['name']}: GMSE must lie in (0, 1) for a compressed representation; "
                f"row {i} has {slot['gmse'][i]!r} ({int(bad.sum())} such rows)"
            )
    return slots


def _slot_part(spec: str, j: int, split_composed: bool) -> tuple[str, bool] | None:
    """Slot ``j`` of a spec: (the part, whether it is one piece of a composition), or None
    where the spec is dense or has no j-th part."""
    comps = split_components(spec) if split_composed else [spec]
    if is_dense(spec) or j >= len(comps):
        return None
    return comps[j], split_composed and len(comps) > 1


def part_methods(df: pd.DataFrame, col: str) -> np.ndarray | None:
    """How each run trained the part in column ``col`` (its rotation, gradient estimator...),
    or None when the table does not say: the part's own column (``method`` for ``format``,
    ``w_method`` or ``method_w`` for ``w_format``), else for one operand of a two-operand
    table the matching piece of a ``method`` column written ``W/A``."""
    mcol = _companion(df, col, "method")
    if mcol is not None:
        values = df[mcol].tolist()
    elif "method" in df.columns:
        cols = part_columns(df)
        values = []
        for v in df["method"].tolist():
            pieces = str(v).split(KEY_SEPARATOR)
            values.append(pieces[cols.index(col)] if len(pieces) == len(cols) else v)
    else:
        return None
    return np.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                     for v in values], dtype=object)


def part_bits(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Bits per value of each part (``w_bits`` etc. when given, else from the spec)."""
    out = {}
    for col in part_columns(df):
        bcol = _companion(df, col, "bits")
        specs = df[col].astype(str).tolist()
        given = (pd.to_numeric(df[bcol], errors="coerce").to_numpy(np.float64) if bcol
                 else np.full(len(specs), np.nan))
        use = np.isfinite(given)
        bits = np.empty(len(specs))
        bits[use] = given[use]
        bits[~use] = _per_value(np.array(specs, dtype=object)[~use], spec_bits, dtype=np.float64)
        out[col] = bits
    return out
