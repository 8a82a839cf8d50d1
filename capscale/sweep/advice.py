"""Which fit a sweep's runs can support, checked before a step is trained.

The sweep ends by suggesting a ``capscale fit`` command; ``--dry-run`` says whether the planned
runs (their N, D and formats, as the runs table will hold them) can identify that law, by
building it exactly as ``capscale fit`` would (:func:`capscale.laws.forms.make_law`), and if
not, what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from capscale.errors import CapscaleError


@dataclass
class FitAdvice:
    law: str  # the law `capscale fit` picks for these runs (the table's columns choose it)
    problem: str | None  # why the planned runs cannot identify it (None: they can)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def command(self, runs_csv) -> str:
        return f"capscale fit {runs_csv} --law {self.law}"

    def describe(self, runs_csv) -> str:
        if self.ok:
            return f"fit: the planned runs support `{self.command(runs_csv)}`"
        return (f"fit: the planned runs cannot identify the law `capscale fit` would use "
                f"({self.law}); missing: {self.problem}")


def planned_table(runs) -> pd.DataFrame:
    """The runs table the planned runs will give, with a placeholder loss (seeds kept: runs
    that differ only by seed are repeats, not duplicates; the training keys too: LSQ and
    trust estimation at one format are two representations)."""
    from capscale.runrecord import TRAINING_KEY_COLUMNS

    return pd.DataFrame([{"N": float(r.n_params), "D": float(r.tokens), "loss": 3.0,
                          "w_format": r.config.w_format, "a_format": r.config.a_format,
                          "seed": r.config.seed,
                          **{k: getattr(r.config, k) for k in TRAINING_KEY_COLUMNS}}
                         for r in runs])


def fit_advice(spec) -> FitAdvice:
    """The law ``capscale fit`` would pick for ``spec``'s runs, and whether they identify it."""
    from capscale.laws.forms import default_law, make_law
    from capscale.laws.table import load_runs

    df = planned_table(spec.runs)
    law = "chinchilla"
    try:
        df = load_runs(df)
        law = default_law(df)
        make_law(law, df)
    except CapscaleError as e:
        return FitAdvice(law, str(e))
    return FitAdvice(law, None)
