"""Fitting a law to a runs table: multi-start Huber fit, bootstrap intervals, held-out error.

:func:`fit_law` is the one entry point; it returns a :class:`FitResult`, which saves to and
loads from JSON and predicts (with intervals) for any runs the law can describe.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from capscale import runrecord
from capscale.errors import CapscaleError
from capscale.io import atomic_write_text
from capscale.laws import representation as rep
from capscale.laws.forms import Law, default_law, law_from_spec, make_law, nest_params
from capscale.laws.identify import unidentified
from capscale.laws.optim import (
    HuberObjective,
    Rescaled,
    batched_lbfgs,
    curvature_scale,
    multistart,
    single_threaded_blas,
)
from capscale.laws.table import data_hash, load_runs, representation_columns, size_groups

SCHEMA = 1
NEAR_BEST = 1e-4  # finalists within this relative objective gap count as "the best starts"
SPREAD_WARN = 0.02  # ...and should agree on every parameter to within this


@dataclass
class FitSettings:
    delta: float = 1e-3
    space: str = "log"
    n_bootstrap: int = 1000
    level: float = 0.95
    seed: int = 0
    n_jobs: int | None = None
    prune: bool = True
    max_starts: int | None = None
    heldout: bool = True
    law_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"huber_delta": self.delta, "residual_space": self.space,
                "n_bootstrap": self.n_bootstrap, "interval_level": self.level, "seed": self.seed,
                "prune_starts": self.prune, "max_starts": self.max_starts,
                "heldout": self.heldout, "law_options": self.law_options}


class FitResult:
    """A fitted law: parameters, intervals, fit quality, and what it was fitted on."""

    def __init__(self, law: Law, theta: np.ndarray, samples: np.ndarray | None, info: dict):
        self.law = law
        self.theta = np.asarray(theta, dtype=np.float64)
        self.samples = None if samples is None else np.asarray(samples, dtype=np.float64)
        self.info = info

    # ------------------------------------------------------------ parameters

    @property
    def natural(self) -> np.ndarray:
        return self.law.to_natural(self.theta)

    @property
    def params(self) -> dict:
        """Natural parameters, nested (``{"A": .., "eff": {"int4": ..}}``), computed from
        ``theta`` (their one copy); ``eff`` holds the multiplier of every representation of
        the table (the dense reference as 1) where the fit derived them."""
        out = nest_params(self.law.natural_names, self.natural.tolist())
        derived = self.info.get("derived_eff") or {}
        if derived:
            out["eff"] = {k: v[0] for k, v in derived.items()}
        return out

    @property
    def intervals(self) -> dict:
        return self.info.get("intervals", {})

    def param(self, name: str) -> float:
        """One natural parameter by flat name (``alpha``, ``eff[int4/int4]``, ``L``)."""
        names = self.law.natural_names
        if name not in names:
            raise CapscaleError(f"fit has no parameter {name!r}; it has {names}")
        return float(self.natural[names.index(name)])

    def interval(self, name: str) -> tuple[float, float]:
        if self.samples is None:
            return (math.nan, math.nan)
        names = self.law.natural_names
        if name not in names:
            raise CapscaleError(f"fit has no parameter {name!r}; it has {names}")
        nat = self.law.to_natural(self.samples)[:, names.index(name)]
        return _percentiles(nat, self.info["settings"]["interval_level"])

    # ------------------------------------------------------------ prediction

    def predict(self, runs: pd.DataFrame, level: float | None = None) -> pd.DataFrame:
        """Predicted loss (and effective-parameter multiplier where the law has one) for the
        runs in ``runs`` (columns N, D and the representation), with bootstrap intervals."""
        level = level or self.info["settings"]["interval_level"]
        X = self.law.design(runs)
        # a diverged bootstrap refit predicts inf (an interval that says so), not a warning
        with np.errstate(over="ignore", invalid="ignore"):
            return self._predict(X, runs.index, level)

    def _predict(self, X, index, level: float) -> pd.DataFrame:
        out = pd.DataFrame(index=index)
        with np.errstate(invalid="ignore"):  # NaN where a fit has no loss (published ρ only)
            lp = self.law.log_predict(self.theta[None, :], X)[0]
        out["loss"] = np.exp(lp)
        if self.samples is not None and len(self.samples):
            with np.errstate(invalid="ignore"):
                lps = np.exp(self.law.log_predict(self.samples, X))
            lo, hi = _percentiles(lps, level, axis=0)
            out["loss_lo"], out["loss_hi"] = lo, hi
        if self.law.has_eff:
            out["eff"] = self.law.eff(self.theta[None, :], X)[0]
            if self.samples is not None and len(self.samples):
                lo, hi = _percentiles(self.law.eff(self.samples, X), level, axis=0)
                out["eff_lo"], out["eff_hi"] = lo, hi
        return out

    # ------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        d = {}
        for k, v in self.info.items():
            d[k] = v
            if k == "reference":  # where the JSON has always shown them
                d["params"] = self.params
        d.setdefault("params", self.params)
        d["law_spec"] = self.law.spec()
        d["theta"] = {"names": self.law.param_names, "values": self.theta.tolist()}
        if self.samples is not None:
            d["bootstrap"] = {"names": self.law.param_names,
                              "samples": [[float(f"{v:.12g}") for v in row] for row in self.samples]}
        return d

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text of the fit; written atomically to ``path`` when given."""
        text = json.dumps(_jsonable(self.to_dict()), indent=2)
        if path is not None:
            atomic_write_text(path, text + "\n")  # what atomic_write_json writes
        return text

    @classmethod
    def from_dict(cls, d: dict) -> FitResult:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA or "law_spec" not in d:
            raise CapscaleError("not a capscale fit (expected the JSON that `capscale fit -o` writes)")
        try:
            law = law_from_spec(d["law_spec"])
            theta = np.array(d["theta"]["values"], dtype=np.float64)
            if theta.shape != (len(law.param_names),) or not np.isfinite(theta).all():
                raise ValueError(f"theta needs {len(law.param_names)} finite numbers")
            samples = None
            if d.get("bootstrap"):
                samples = np.array(d["bootstrap"]["samples"], dtype=np.float64).reshape(-1, len(theta))
            # "params" is written for readers of the JSON; the fit recomputes it from theta
            info = {k: v for k, v in d.items()
                    if k not in ("law_spec", "theta", "bootstrap", "params")}
            if not isinstance(info.get("data", {}), dict) or not isinstance(info.get("settings", {}), dict):
                raise ValueError("'data' and 'settings' must be objects")
        except CapscaleError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise CapscaleError(f"not a readable capscale fit ({type(e).__name__}: {e}); "
                                "write it again with `capscale fit -o`") from None
        return cls(law, theta, samples, info)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FitResult:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError as e:
            raise CapscaleError(f"fit file {path} does not exist; make one with `capscale fit`") from e
        except json.JSONDecodeError as e:
            raise CapscaleError(f"fit file {path} is not valid JSON ({e})") from e
        except (OSError, UnicodeDecodeError) as e:
            raise CapscaleError(f"fit file {path} cannot be read ({e})") from e
        try:
            return cls.from_dict(d)
        except CapscaleError as e:
            raise CapscaleError(f"fit file {path}: {e}") from None

    def summary(self) -> str:
        """The parameters with intervals and the fit quality, as text."""
        info = self.info
        lines = [f"law {info['law']}: {info['formula']}",
                 f"fitted on {info['data']['n_runs']} runs ({info['data']['source']}), "
                 f"{info['data']['hash'][:19]}"]
        level = info["settings"]["interval_level"]
        lines.append(f"{'parameter':<28} {'value':>12}   {int(level * 100)}% bootstrap interval")
        for name in self.law.natural_names:
            v = self.param(name)
            lo, hi = self.interval(name)
            iv = f"[{lo:.4g}, {hi:.4g}]" if math.isfinite(lo) else "(no bootstrap)"
            lines.append(f"{name:<28} {v:>12.5g}   {iv}")
        for key, (v, lo, hi) in info.get("derived_eff", {}).items():
            if key not in [n[4:-1] for n in self.law.natural_names if n.startswith("eff[")]:
                iv = f"[{lo:.4g}, {hi:.4g}]" if lo is not None and math.isfinite(lo) else ""
                lines.append(f"{'eff[' + key + ']':<28} {v:>12.5g}   {iv}")
        lines.append(f"in-sample RMSE: loss {info['rmse_loss']:.4g}, log loss {info['rmse_log_loss']:.4g}")
        h = info.get("heldout") or {}
        if "rmse_loss" in h:
            lines.append(f"held out ({h['rule']}, {h['n_runs']} runs): RMSE loss {h['rmse_loss']:.4g}, "
                         f"log loss {h['rmse_log_loss']:.4g}, mean error {h['mean_error']:+.4g}")
        elif h.get("error"):
            lines.append(f"held out: not computed ({h['error']})")
        sp = info.get("spread", {})
        if sp:
            lines.append(f"starts: {sp['n_starts']}, {sp['n_near_best']} of the continued ones end "
                         f"within {NEAR_BEST:g} of the best objective")
        for w in info.get("warnings", []):
            lines.append(f"warning: {w}")
        return "\n".join(lines)


def _percentiles(x: np.ndarray, level: float, axis: int = 0):
    q = 100 * (1 - level) / 2
    with warnings.catch_warnings():  # a quantity no sample defines is NaN, said without noise
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(x, [q, 100 - q], axis=axis)
    return lo, hi


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


# ---------------------------------------------------------------- fitting


# On a table larger than this the starting points are searched on a subsample of this many
# runs, and only the best end points continue on every run (see fit_once).
SEARCH_ROWS = 1024
N_CONTINUE = 32


def fit_once(law: Law, df: pd.DataFrame, settings: FitSettings, say=None):
    """The multi-start fit of ``law`` to ``df``: returns (MultiStartResult, objective).

    The search over thousands of starting points only has to find the basin of the best
    optimum, and a few thousand runs show it as well as a hundred thousand. So on a table of
    more than ``SEARCH_ROWS`` runs every start is refined on a fixed subsample of that many
    runs (stratified by representation, so that every multiplier is seen), and the
    ``N_CONTINUE`` best end points then run to convergence on all runs and are polished
    there: the cost grows with the table as N_CONTINUE starts do, not as thousands do. Smaller
    tables are fitted on every run from every start, as before.
    """
    X = law.design(df)
    obj = HuberObjective(law, X, df["loss"].to_numpy(), delta=settings.delta, space=settings.space)
    starts = law.start_grid(settings.max_starts)
    if len(df) <= SEARCH_ROWS:
        return multistart(obj, starts, prune=settings.prune), obj
    sub = search_subsample(df, law, SEARCH_ROWS)
    sub_obj = HuberObjective(law, law.design(df.iloc[sub]), df["loss"].to_numpy()[sub],
                             delta=settings.delta, space=settings.space)
    if say:
        say(f"searching {len(starts)} starts on {len(sub)} of the {len(df)} runs")
    found = multistart(sub_obj, starts, prune=settings.prune, n_polish=0)
    best = found.finalists[:N_CONTINUE]
    if say:
        say(f"continuing the {len(best)} best on all {len(df)} runs "
            f"(search took {found.stats['seconds_batched']:.2f} s)")
    ms = multistart(obj, best, prune=False)
    ms.stats = {**ms.stats, "n_starts": int(len(starts)), "search_rows": int(len(sub)),
                "n_continued": int(len(best)),
                "median_iterations_search": found.stats["median_iterations"],
                "function_evaluations_per_start_search":
                    found.stats["function_evaluations_per_start"],
                "seconds_batched": round(found.stats["seconds_batched"]
                                         + ms.stats["seconds_batched"], 4)}
    return ms, obj


def search_subsample(df: pd.DataFrame, law: Law, size: int) -> np.ndarray:
    """A fixed subsample of ``size`` rows of ``df`` (sorted positions) for the start search:
    drawn within each representation in proportion to its runs (at least 32 of each, or all
    it has), with a seed that depends on nothing but the table's length."""
    n = len(df)
    if representation_columns(df):
        keys = rep.representation_keys(df, getattr(law, "key_columns", None))
        strata = pd.factorize(pd.Series(keys))[0]
    else:
        strata = np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(n)
    picked = []
    for s in range(strata.max() + 1):
        idx = np.flatnonzero(strata == s)
        k = min(len(idx), max(32, int(round(size * len(idx) / n))))
        picked.append(rng.choice(idx, k, replace=False))
    return np.sort(np.concatenate(picked))


def fit_law(runs: pd.DataFrame | str | os.PathLike, law: str | None = None, *,
            delta: float = 1e-3, space: str = "log", n_bootstrap: int = 1000,
            level: float = 0.95, seed: int = 0, n_jobs: int | None = None, prune: bool = True,
            max_starts: int | None = None, heldout: bool = True, progress: bool = False,
            **law_options) -> FitResult:
    """Fit ``law`` to a runs table (a DataFrame from :func:`load_runs`, or a path).

    Chinchilla's Approach 3: a Huber loss (``delta``) on log-loss residuals (``space="log"``;
    ``"linear"`` fits the loss itself), a grid of starting points each refined by L-BFGS with
    analytic gradients, the best optimum kept. Then ``n_bootstrap`` resamples of the runs
    (with replacement, refitted over ``n_jobs`` processes; by default all cores when the
    refits take long enough to pay for the workers, see :func:`bootstrap`) give percentile
    intervals at ``level`` for every parameter, and the largest model size is held out and
    predicted from a fit to the rest (``heldout``). Without ``law``, the table's columns choose
    it (:func:`~capscale.laws.forms.default_law`). Law options: ``key_columns`` (decoupled),
    ``capacity_groups``, ``split_composed``, ``fix_L``, ``curve`` (unified), ``pool_formats``
    (chinchilla); ``fix`` (any law: natural parameters held at given values,
    ``{"E": 1.7, "alpha": 0.3}`` or ``"F=0.41,C=1.39"``).
    """
    with single_threaded_blas():  # once for every step below
        return _fit_law(runs, law, delta=delta, space=space, n_bootstrap=n_bootstrap,
                        level=level, seed=seed, n_jobs=n_jobs, prune=prune,
                        max_starts=max_starts, heldout=heldout, progress=progress,
                        law_options=law_options)


def _fit_law(runs, law, *, delta, space, n_bootstrap, level, seed, n_jobs, prune, max_starts,
             heldout, progress, law_options) -> FitResult:
    t0 = time.perf_counter()
    df = _read_runs(runs)
    if law is None:
        law = default_law(df)
    settings = _settings(delta=delta, space=space, n_bootstrap=n_bootstrap, level=level,
                         seed=seed, n_jobs=n_jobs, prune=prune, max_starts=max_starts,
                         heldout=heldout, law_options=law_options)
    the_law = make_law(law, df, **law_options)
    ms, X = _search(the_law, df, settings, progress)
    samples = _resample(the_law, X, df, ms, settings, progress)
    result = FitResult(the_law, ms.theta, samples, _describe(the_law, X, df, ms, settings))
    notes = _assess(result, X, df, ms)
    result.info["heldout"] = (_heldout(df, law, settings, result, ms, progress) if heldout
                              else None)
    result.info["warnings"] = notes
    result.info["fit_seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _read_runs(runs: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """The runs table, checked and reported on by :func:`load_runs` (once)."""
    df = runs if isinstance(runs, pd.DataFrame) else load_runs(runs)
    return df if "report" in df.attrs else load_runs(df)


def _settings(*, delta: float, level: float, n_bootstrap: int, law_options: dict,
              **rest) -> FitSettings:
    """The fit's settings, refused with a message where they make no sense."""
    if not 0 < delta < math.inf:
        raise CapscaleError(f"Huber delta must be positive, not {delta}")
    if not 0 < level < 1:
        raise CapscaleError(f"interval level must lie in (0, 1), not {level}")
    if n_bootstrap < 0:
        raise CapscaleError(f"bootstrap samples must be 0 (none) or more, not {n_bootstrap}")
    return FitSettings(delta=delta, level=level, n_bootstrap=n_bootstrap, **rest,
                       law_options={k: v for k, v in law_options.items() if v is not None})


def _search(the_law: Law, df: pd.DataFrame, settings: FitSettings, progress: bool):
    """The multi-start fit (:func:`fit_once`), said as it goes: (MultiStartResult, design)."""
    _say(progress, f"fitting {the_law.name} ({the_law.n_params} parameters) to {len(df)} runs")
    ms, obj = fit_once(the_law, df, settings, say=lambda m: _say(progress, m))
    seconds = ms.stats["seconds_batched"] + ms.stats["seconds_polish"]
    _say(progress, f"best of {ms.stats['n_starts']} starts in {seconds:.2f} s")
    return ms, obj.X


def _resample(the_law: Law, X, df: pd.DataFrame, ms, settings: FitSettings,
              progress: bool) -> np.ndarray | None:
    """The bootstrap refits (:func:`bootstrap`), or None without a bootstrap."""
    if settings.n_bootstrap <= 0:
        return None
    t = time.perf_counter()
    samples = bootstrap(the_law, X, df["loss"].to_numpy(), ms, n=settings.n_bootstrap,
                        seed=settings.seed, delta=settings.delta, space=settings.space,
                        n_jobs=settings.n_jobs, progress=progress, strata=_strata(the_law, df))
    _say(progress, f"{settings.n_bootstrap} bootstrap refits in {time.perf_counter() - t:.2f} s")
    return samples


def _describe(the_law: Law, X, df: pd.DataFrame, ms, settings: FitSettings) -> dict:
    """The fit's record: the law, in-sample errors, objective, settings, data, search."""
    lp = the_law.log_predict(ms.theta[None, :], X)[0]
    logy = np.log(df["loss"].to_numpy())
    return {
        "schema": SCHEMA,
        "law": the_law.name,
        "formula": the_law.formula,
        "reference": the_law.reference,
        "rmse_loss": float(np.sqrt(np.mean((np.exp(lp) - np.exp(logy)) ** 2))),
        "rmse_log_loss": float(np.sqrt(np.mean((lp - logy) ** 2))),
        "objective": {"huber_sum": float(ms.value * settings.delta * len(df)),
                      "huber_mean_abs": float(ms.value)},
        "settings": {**settings.to_dict(), "n_jobs": settings.n_jobs, "numpy": np.__version__,
                     "scipy": scipy.__version__, "python": platform.python_version()},
        "data": {"hash": data_hash(df, _used_columns(df)), "n_runs": len(df),
                 "ranges": _ranges(df, the_law),
                 "source": df.attrs.get("source", "runs table"),
                 "selection": df.attrs.get("selection"),
                 "report": df.attrs.get("report", {}), "columns": _used_columns(df)},
        "search": ms.stats,
        "spread": _start_spread(the_law, ms),
    }


def _assess(result: FitResult, X, df: pd.DataFrame, ms) -> list[str]:
    """Intervals, derived multipliers and what the runs leave unidentified, into
    ``result.info``; returns the warnings (dead terms, intervals, flat or multi-modal
    optima)."""
    law, info, samples = result.law, result.info, result.samples
    natural = law.to_natural(ms.theta)
    notes, dead = _term_warnings(law, ms.theta, X)
    lo = hi = None
    if samples is not None:
        lo, hi = _percentiles(law.to_natural(samples), info["settings"]["interval_level"])
        info["intervals"] = nest_params(law.natural_names,
                                        [[float(a), float(b)] for a, b in zip(lo, hi)])
        notes += _interval_warnings(law, natural, lo, hi, skip=dead)
    notes += _search_warnings(law, ms, info["spread"], lo, hi, skip=dead)
    info["derived_eff"] = _derived_eff(result, df)
    info["unidentified"] = unidentified(law, natural, lo, hi, dead, info["derived_eff"])
    if info["derived_eff"] and samples is not None:
        info["intervals"]["eff"] = {k: [v[1], v[2]] for k, v in info["derived_eff"].items()}
    return notes


def _heldout(df: pd.DataFrame, law: str, settings: FitSettings, result: FitResult, ms,
             progress: bool) -> dict:
    """The held-out error (:func:`heldout_error`, from the end points of the fit ``ms``),
    said as it goes."""
    _say(progress, "held-out fit: the largest model size predicted from the rest")
    out = heldout_error(df, law, settings, say=lambda m: _say(progress, f"held-out: {m}"),
                        near=(result.law, ms.finalists))
    _say(progress, "held-out fit done")
    return out


def _say(progress: bool, msg: str) -> None:
    if progress:
        import sys

        print(f"[fit] {msg}", file=sys.stderr, flush=True)


def _ranges(df: pd.DataFrame, law: Law | None = None) -> dict:
    tpp = df["D"] / df["N"]
    out = {"N": [float(df["N"].min()), float(df["N"].max())],
           "D": [float(df["D"].min()), float(df["D"].max())],
           "tokens_per_param": [float(tpp.min()), float(tpp.max())]}
    if law is not None and law.name == "unified":  # the GMSE the capacity curves have seen
        g = [v for slot in rep.part_table(df, split_composed=law.split_composed)
             for v, k in zip(slot["gmse"], slot["kind"]) if k != "dense"]
        if g:
            out["gmse"] = [float(min(g)), float(max(g))]
    return out


def _used_columns(df: pd.DataFrame) -> list[str]:
    wanted = [*runrecord.REQUIRED_COLUMNS, *runrecord.REPRESENTATION_COLUMNS,
              *runrecord.quantity_columns("gmse"), *runrecord.quantity_columns("kind"),
              *runrecord.quantity_columns("bits"), "sparsity", "method", "seed"]
    return [c for c in wanted if c in df.columns]


def _derived_eff(result: FitResult, df: pd.DataFrame) -> dict:
    """Multiplier of every representation in the table (value, lo, hi); for decoupled fits the
    dense reference shows as exactly 1."""
    law = result.law
    if not law.has_eff or law.name == "sparsity":
        return {}
    key_cols = getattr(law, "key_columns", None)
    try:
        keys = rep.representation_keys(df, key_cols)
    except CapscaleError:
        return {}
    first = pd.Series(range(len(df))).groupby(pd.Series(keys)).first()
    sub = df.iloc[first.to_numpy()].reset_index(drop=True)
    pred = result.predict(sub)
    out = {}
    for k, (_, row) in zip(first.index, pred.iterrows()):
        lo = row.get("eff_lo", math.nan)
        hi = row.get("eff_hi", math.nan)
        out[k] = (float(row["eff"]), float(lo), float(hi))
    return out


def _start_spread(law: Law, ms) -> dict:
    """Where the best starts ended: the range of every parameter over the finalists whose
    objective is within NEAR_BEST of the best."""
    f = ms.finalist_values
    near = f <= ms.value * (1 + NEAR_BEST) + 1e-15
    nat = law.to_natural(ms.finalists[near])
    ranges = {name: [float(nat[:, j].min()), float(nat[:, j].max())]
              for j, name in enumerate(law.natural_names)}
    return {"n_starts": ms.stats["n_starts"], "n_near_best": int(near.sum()),
            "near_best_ranges": ranges}


def _search_warnings(law: Law, ms, spread: dict, lo=None, hi=None, skip=()) -> list[str]:
    """A flat or multi-modal optimum is a warning in the output, not a secret.

    Flat: the best starts disagree on a parameter by more than half of its bootstrap
    interval (or by more than 5% without a bootstrap). Multi-modal: another optimum within 1%
    of the best objective lies outside the interval (or more than 5% away)."""
    out = []
    best = law.to_natural(ms.theta)
    for j, name in enumerate(law.natural_names):
        if j in skip:
            continue
        a, b = spread["near_best_ranges"][name]
        width = (hi[j] - lo[j]) if lo is not None else 0.1 * abs(best[j])
        if b - a > 0.5 * max(width, 1e-12):
            out.append(f"flat optimum: the best starts (within {NEAR_BEST:g} of the best "
                       f"objective) disagree on {name}: {a:.4g} to {b:.4g}")
    f = ms.finalist_values
    second = np.flatnonzero((f > ms.value * (1 + NEAR_BEST)) & (f <= ms.value * 1.01))
    for i in second[:20]:
        other = law.to_natural(ms.finalists[i])
        if lo is not None:
            outside = (other < lo) | (other > hi)
        else:
            outside = np.abs(other - best) > 0.05 * np.maximum(np.abs(best), 1e-12)
        outside[list(skip)] = False
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            out.append(f"multi-modal: another optimum within {100 * (f[i] / ms.value - 1):.2g}% "
                       f"of the best objective has {law.natural_names[j]} = {other[j]:.4g} "
                       f"(best {best[j]:.4g})")
            break
    return out


def _interval_warnings(law: Law, best: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                       skip=()) -> list[str]:
    out = []
    for j in sorted(set(range(len(law.natural_names))) - set(skip)):
        if not (math.isfinite(lo[j]) and math.isfinite(hi[j])):  # NaN compares False below
            out.append(f"{law.natural_names[j]} is not identified by these runs: its bootstrap "
                       f"interval [{lo[j]:.3g}, {hi[j]:.3g}] is not finite (refits diverged)")
    for j in sorted(set(getattr(law, "natural_log_params", law.log_params)) - set(skip)):
        if not (math.isfinite(lo[j]) and math.isfinite(hi[j])):
            continue
        name = law.natural_names[j]
        if lo[j] <= 0:
            continue
        span = math.log(hi[j]) - math.log(lo[j])  # in logs: hi / lo can overflow a float
        if span > math.log(100):
            factor = f"{math.exp(span):.3g}" if span < 700 else "over 1e300"
            out.append(f"{name} is not identified by these runs: its interval spans "
                       f"{lo[j]:.3g} to {hi[j]:.3g} (a factor {factor})")
    return out


def _term_warnings(law: Law, theta: np.ndarray, X) -> tuple[list[str], set[int]]:
    """A term that is negligible for every run leaves its parameters unidentified; returns
    the warnings and the indices of those parameters (so that other checks skip them)."""
    T = [np.broadcast_to(t, (1, X.n))[0] for t in law.terms(theta[None, :], X)]
    lp = np.logaddexp.reduce(np.stack(T), axis=0)
    out, dead = [], set()
    for k, t in enumerate(T):
        share = float(np.exp(t - lp).max())
        if share < 1e-3:
            label = law.term_labels[k] if k < len(law.term_labels) else f"term {k}"
            out.append(f"the term {label} is below {share:.1e} of the loss for every run: these "
                       "runs do not identify its parameters (their intervals mean nothing)")
            if k < len(law.term_params):
                dead |= set(law.term_params[k])
    return out, dead


# ---------------------------------------------------------------- bootstrap


def _strata(law: Law, df: pd.DataFrame) -> np.ndarray | None:
    """The bootstrap resamples within each representation (format, or w/a pair), so that no
    resample loses a format and leaves its parameters at their starting values."""
    if not representation_columns(df):
        return None
    keys = rep.representation_keys(df, getattr(law, "key_columns", None))
    return pd.factorize(pd.Series(keys))[0]


def bootstrap(law: Law, X, loss: np.ndarray, ms, *, n: int = 1000, seed: int = 0,
              delta: float = 1e-3, space: str = "log", n_jobs: int | None = None,
              progress: bool = False, max_starts_per_resample: int = 2,
              strata: np.ndarray | None = None) -> np.ndarray:
    """Refit the law to ``n`` resamples of the runs (drawn with replacement; within each
    stratum when ``strata`` labels the runs) and return the fitted parameter vectors (n, P).
    Each resample starts from the few best distinct optima of the full fit (one basin or a
    few: a resample's optimum lies near the full fit's, and the others guard against its
    landing in another basin); all resamples of a worker are solved as one batched L-BFGS
    problem, in coordinates scaled by the full fit's curvature at its optimum
    (:class:`~capscale.laws.optim.Rescaled`), in which a resample's optimum is a few
    iterations away (on Chinchilla's runs 15 evaluations per refit instead of 38, and the
    same optima). Refits still stop at 500 iterations: along the flat valley of a parameter
    the runs do not identify, some stop there unconverged, scaled or not.

    ``n_jobs`` forked workers share the resamples. By default (None) the first sixteenth of
    the resamples (at least 16) is refitted here, and the rest goes to one worker per core
    only when the evaluations those took project more work than forking pays for
    (:data:`PARALLEL_WORK`); otherwise it is refitted here too."""
    weights = _resample_weights(len(loss), n, seed, strata)
    starts = _bootstrap_starts(ms, max_starts_per_resample)
    with single_threaded_blas():
        full = HuberObjective(law, X, loss, delta=delta, space=space)
        C = curvature_scale(full, ms.theta)
    problem = (law, X, loss)
    how = (starts, delta, space, None if C is None else (ms.theta, C))
    context = _fork_context()
    cores = os.cpu_count() or 1
    if n_jobs is None and context is not None and cores > 1 and n > 1:
        return _refit_pilot_first(problem, weights, how, cores, context)
    jobs = max(1, min(n_jobs or cores, n)) if context is not None else 1
    return _refit_split(problem, weights, how, jobs, context)


def _resample_weights(n_runs: int, n: int, seed: int, strata: np.ndarray | None) -> np.ndarray:
    """(n, n_runs): how often each run is drawn into each of ``n`` resamples (with
    replacement; within each stratum when ``strata`` labels the runs)."""
    rng = np.random.default_rng(seed)
    if strata is None:
        draws = rng.integers(0, n_runs, size=(n, n_runs))
    else:
        draws = np.empty((n, n_runs), dtype=np.int64)
        for s in np.unique(strata):
            idx = np.flatnonzero(strata == s)
            draws[:, idx] = idx[rng.integers(0, len(idx), size=(n, len(idx)))]
    weights = np.zeros((n, n_runs))
    np.add.at(weights, (np.repeat(np.arange(n), n_runs), draws.ravel()), 1.0)
    return weights


# Forked workers take about a tenth of a second to start and feed, so by default the
# bootstrap forks them only for refits that would take longer than a few tenths in one
# process. The work is counted as parameter vectors evaluated × runs × parameters (3-13 ns
# each on the builtin tables), projected from the first refits (PILOT_FRACTION of them, at
# least 16, done here in any case); counting it, unlike timing it, decides the same way on
# every run, and so gives the same numbers. Chinchilla's 1,000 refits count 1.8e7 (0.1 s).
PARALLEL_WORK = 3e7
PILOT_FRACTION = 1 / 16


def _refit_pilot_first(problem: tuple, weights: np.ndarray, how: tuple, cores: int,
                       context) -> np.ndarray:
    """The first resamples refitted here; the rest here too, or over ``cores`` forked
    workers when the first ones show that the rest is worth the workers."""
    n, n_runs = weights.shape
    pilot = min(n - 1, max(16, int(n * PILOT_FRACTION)))
    evals: list[int] = []
    first = _bootstrap_chunk(*problem, weights[:pilot], *how, evals)
    n_params = how[0].shape[1]  # of the starts
    work = evals[0] / pilot * (n - pilot) * n_runs * n_params
    jobs = max(1, min(cores, n - pilot)) if work >= PARALLEL_WORK else 1
    return np.concatenate([first, _refit_split(problem, weights[pilot:], how, jobs, context)])


def _refit_split(problem: tuple, weights: np.ndarray, how: tuple, jobs: int,
                 context) -> np.ndarray:
    """The resamples refitted in ``jobs`` chunks, one forked worker each (here for one)."""
    chunks = np.array_split(weights, jobs)
    if jobs == 1:
        return _bootstrap_chunk(*problem, chunks[0], *how)
    from concurrent.futures import ProcessPoolExecutor

    args = [(*problem, c, *how) for c in chunks]
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        results = list(pool.map(_bootstrap_chunk, *zip(*args)))
    return np.concatenate(results, axis=0)


def _fork_context():
    """Workers are forked: they share the design arrays without pickling, start in
    milliseconds and use numpy and scipy only. Where fork does not exist the bootstrap runs
    in this process (spawned workers would re-run the ``capscale`` entry point)."""
    from multiprocessing import get_context

    try:
        return get_context("fork")
    except ValueError:
        return None


def _bootstrap_starts(ms, k: int) -> np.ndarray:
    rows = [ms.theta]
    for x in ms.finalists:
        if len(rows) == k:
            break
        if all(np.max(np.abs(x - r) / (np.abs(r) + 1e-8)) > 1e-3 for r in rows):
            rows.append(x)
    return np.array(rows)


def _bootstrap_chunk(law, X, loss, weights, starts, delta, space, scaling=None,
                     evals: list | None = None) -> np.ndarray:
    """Refits to the resamples weighted by the rows of ``weights`` from every start, in the
    coordinates of ``scaling`` (θ0, C) where given: the best end point of each resample.
    The number of parameter vectors evaluated is appended to ``evals`` where given."""
    B, k = weights.shape[0], starts.shape[0]
    obj = HuberObjective(law, X, loss, delta=delta, space=space, weights=weights)
    fun = obj if scaling is None else Rescaled(obj, *scaling)
    x0 = np.tile(starts if scaling is None else fun.to_z(starts), (B, 1))
    rows = np.repeat(np.arange(B), k)
    with single_threaded_blas():
        res = batched_lbfgs(fun, x0, rows, maxiter=500, ftol=1e-10)
    x = res.x if scaling is None else fun.to_theta(res.x)
    f = res.f.reshape(B, k)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    if evals is not None:
        evals.append(obj.n_evals)
    return x.reshape(B, k, -1)[np.arange(B), best]


# ---------------------------------------------------------------- held-out error


def heldout_error(df: pd.DataFrame, law: str, settings: FitSettings, say=None,
                  near: tuple[Law, np.ndarray] | None = None) -> dict:
    """Leave out the largest model size (sizes within 5% count as one), fit the rest with the
    same settings (no bootstrap), and predict the runs left out.

    ``near`` is the fit to the whole table: its law and the end points its start search ran
    to convergence (best first). The rest of the table is most of the table, and its optimum
    lies near the whole table's, as a bootstrap resample's does; so these end points (the
    best of the thousands of starts: after successive halving, the few dozen that survived
    both pruning rounds) run to convergence on the rest and are polished there, instead of
    a second search from every start (:func:`continue_near`). Without ``near``, with an
    unpruned search (``settings.prune`` false: every start runs everywhere), or where the
    rest of the table gives the law other parameters (a format only the left-out size has),
    the rest is searched from every start as the whole table was."""
    groups = size_groups(df["N"].to_numpy())
    test = groups == groups.max()
    train_df = df[~test].reset_index(drop=True)
    test_df = df[test].reset_index(drop=True)
    rule = "largest model size"
    base = {"rule": rule, "N": float(test_df["N"].median()), "n_runs": int(test.sum())}
    try:
        train_law = make_law(law, train_df, **settings.law_options)
        ms = None
        if near is not None and settings.prune:
            ms = continue_near(train_law, train_df, settings, *near, say=say)
        if ms is None:
            ms, _ = fit_once(train_law, train_df, settings, say=say)
    except CapscaleError as e:
        return {**base, "error": str(e)}
    keep, skipped = _describable(train_law, test_df)
    if not keep:
        return {**base, "error": "no held-out run has a representation the rest of the table fits"}
    sub = test_df.iloc[keep].reset_index(drop=True)
    lp = train_law.log_predict(ms.theta[None, :], train_law.design(sub))[0]
    y = sub["loss"].to_numpy()
    err = np.exp(lp) - y
    out = {**base, "n_runs": len(keep),
           "rmse_loss": float(np.sqrt(np.mean(err**2))),
           "rmse_log_loss": float(np.sqrt(np.mean((lp - np.log(y)) ** 2))),
           "mean_error": float(err.mean()),
           "max_abs_error": float(np.abs(err).max())}
    if skipped:
        keys = rep.representation_keys(test_df.iloc[skipped]) if representation_columns(test_df) else []
        out["skipped"] = {"n_runs": len(skipped), "why": "representation not in the rest of the table",
                          "representations": sorted(set(keys))}
    return out


def continue_near(law: Law, df: pd.DataFrame, settings: FitSettings, other: Law,
                  end_points: np.ndarray, say=None):
    """Fit ``law`` to ``df`` from ``end_points`` of a fit of ``other`` (the same law on an
    overlapping table; parameters carried over as natural values, since the centring of log
    N and log D follows the table): every end point runs to convergence, the best few are
    polished. Returns the MultiStartResult, or None where the two laws' parameters differ."""
    if (list(law.natural_names) != list(other.natural_names)
            or len(law.param_names) != len(other.param_names)):
        return None
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        starts = law.from_natural(other.to_natural(end_points))
    starts = starts[np.isfinite(starts).all(1)]
    if not len(starts):
        return None
    if say:
        say(f"continuing the whole table's {len(starts)} best end points on {len(df)} runs")
    obj = HuberObjective(law, law.design(df), df["loss"].to_numpy(), delta=settings.delta,
                         space=settings.space)
    return multistart(obj, starts, prune=False)


def _describable(law: Law, df: pd.DataFrame) -> tuple[list[int], list[int]]:
    """Positions of the rows of ``df`` whose representation ``law`` can describe, and of the
    rest. One design of the whole table decides when it succeeds; only a table with rows the
    law cannot describe is tried row by row."""
    try:
        law.design(df)
        return list(range(len(df))), []
    except CapscaleError:
        pass
    keep, skipped = [], []
    for i in range(len(df)):
        try:
            law.design(df.iloc[[i]])
            keep.append(i)
        except CapscaleError:
            skipped.append(i)
    return keep, skipped


def save_fit(result: FitResult, path: str | os.PathLike) -> Path:
    result.to_json(path)
    return Path(path)
