"""Sweeps: a TOML grid of training runs, expanded into run folders and brought to an end by a
launcher (local processes, torchrun, SLURM), idempotently; then the runs table.

    >>> from capscale.sweep import load_spec, run_sweep
    >>> spec = load_spec("sweep.toml")            # validated and expanded: spec.runs
    >>> out = run_sweep(spec, "runs/my-sweep", jobs=2)
    >>> out.runs_csv                                # finished runs, ready for capscale fit
"""

from capscale.sweep.cost import estimate, vocab_size_of
from capscale.sweep.runner import SweepOutcome, plan_text, run_sweep
from capscale.sweep.spec import (
    PlannedRun,
    SweepSpec,
    load_spec,
    run_name,
    spec_from_dict,
    spec_from_text,
)
from capscale.sweep.state import runs_table, status_table, write_tables

__all__ = [
    "PlannedRun",
    "SweepOutcome",
    "SweepSpec",
    "estimate",
    "load_spec",
    "plan_text",
    "run_name",
    "run_sweep",
    "runs_table",
    "spec_from_dict",
    "spec_from_text",
    "status_table",
    "vocab_size_of",
    "write_tables",
]
