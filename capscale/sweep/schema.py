"""What the tables of a sweep spec may hold, and the message for a key they may not.

Both the spec parser (:mod:`capscale.sweep.spec`) and the SLURM launcher
(:mod:`capscale.sweep.slurm`) read these, so neither imports the other for them.
"""

from __future__ import annotations

import difflib

from capscale.errors import CapscaleError


def unknown_key(where: str, key: str, valid) -> CapscaleError:
    """The error for ``key`` in a table whose keys are ``valid``, with the closest valid key
    suggested."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return CapscaleError(f"{where}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


# ---------------------------------------------------------------- [slurm]

SLURM_KEYS = {
    "partition": str, "account": str, "qos": str, "constraint": str, "timeout_min": int,
    "cpus_per_gpu": int, "mem_gb": (int, float), "array": bool, "array_parallelism": int,
    "job_name": str, "setup": list, "python": str, "additional": dict, "cluster": str,
}
CLUSTERS = ("slurm", "local", "debug")
DEFAULTS = {"cpus_per_gpu": 8, "array": True}


def validate_slurm(table: dict, where: str) -> dict:
    """The ``[slurm]`` table with its defaults filled in; a bad key, type or value is an
    error naming it (values become ``#SBATCH`` lines, so no spaces or line breaks)."""
    out = dict(DEFAULTS)
    for k, v in table.items():
        if k not in SLURM_KEYS:
            raise unknown_key(where, k, SLURM_KEYS)
        kind = SLURM_KEYS[k]
        if not isinstance(v, kind) or (isinstance(v, bool) and kind is not bool):
            names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise CapscaleError(f"{where}: {k} = {v!r} must be a {names}")
        if k == "setup" and not all(isinstance(x, str) for x in v):
            raise CapscaleError(f"{where}: setup must be a list of shell lines (strings)")
        if k == "cluster" and v not in CLUSTERS:
            raise CapscaleError(f"{where}: cluster = {v!r}; valid: {', '.join(CLUSTERS)}")
        if k in ("timeout_min", "cpus_per_gpu", "array_parallelism", "mem_gb") and v <= 0:
            raise CapscaleError(f"{where}: {k} = {v!r} must be positive")
        # values become '#SBATCH --key=value' lines: one line each, no shell to inject
        values = list(v.items()) if k == "additional" else [(k, v)]
        for name, value in values:
            for text in (str(name), str(value)) if k != "setup" else ():
                if any(c in text for c in "\n\r\0") or (k != "python" and any(c.isspace() for c in text)):
                    raise CapscaleError(f"{where}: {k} = {v!r}: an sbatch option is one word "
                                        "without spaces or line breaks")
        if k == "setup" and any(c in line for line in v for c in "\n\r\0"):
            raise CapscaleError(f"{where}: setup = {v!r}: give one shell line per list item")
        out[k] = v
    return out
