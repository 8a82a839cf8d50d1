"""Fits shipped with capscale (``builtin:NAME``), so that predict, compare and plan answer
without a fit step: made once from the shipped runs tables and cached.

- ``quest-decoupled``: one multiplier per (weights, activations) format of QuEST's 104 QAT
  runs (arXiv 2502.05003), fitted by capscale.
- ``quest-unified``: the unified law on the same runs, one capacity curve ρ(GMSE) for every
  compression type, so it predicts formats never trained (NVFP4, MXFP4) from their GMSE.
- ``chinchilla-epoch``: Chinchilla's Approach 3 on Epoch AI's digitisation (240 runs), as in
  Besiroglu et al. 2024 (arXiv 2404.10102); dense only.
- ``unified-paper``: the unified paper's published Llama/C4 capacity curve (arXiv 2506.01863:
  L 1.0 ± 0.7, F 0.41 ± 0.02, C 1.39 ± 0.08). The paper does not publish A and B, so this fit
  gives ρ and no loss (its losses are NaN: not identified). Its intervals draw F and C (and
  α, β, E) from normals with the published ± as standard error, independently (the paper
  gives no correlations), truncated at zero. L stays at 1: an exact representation trains
  like the dense model, and the published ±0.7 on L is its trade-off with the unpublished A
  (drawn independently it would make every ρ interval span two orders of magnitude).

A built fit is cached under the capscale cache root (``fits/``), keyed by the recipe, the
shipped data's hash and the capscale version; its JSON carries ``provenance``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from capscale import __version__
from capscale.errors import CapscaleError
from capscale.laws.fit import SCHEMA, FitResult, fit_law
from capscale.laws.forms import UnifiedLaw, nest_params

PREFIX = "builtin:"
RECIPE_VERSION = 1  # bump when a recipe below changes what it builds
N_BOOTSTRAP = 1000
PAPER_DRAWS = 2000


@dataclass(frozen=True)
class Recipe:
    description: str
    table: str | None  # builtin runs table (capscale.laws.datasets.BUILTIN)
    law: str
    options: dict = field(default_factory=dict)
    notes: str = ""


RECIPES = {
    "quest-decoupled": Recipe(
        "QuEST's 104 QAT runs (30M-800M, arXiv 2502.05003), one multiplier per W/A format",
        "quest", "decoupled"),
    "quest-unified": Recipe(
        "QuEST's 104 QAT runs, unified law: one capacity curve rho(GMSE) for all formats "
        "(predicts untrained formats from their GMSE)", "quest", "unified",
        {"capacity_groups": "single"}),
    "chinchilla-epoch": Recipe(
        "Chinchilla Approach 3 on Epoch AI's digitisation (240 runs, arXiv 2404.10102); dense",
        "chinchilla", "chinchilla", {},
        "Epoch's published fit: A 482.0, B 2085, E 1.817, alpha 0.3478, beta 0.3658 "
        "(likelihood variant); their Huber fit A 477.8, B 2143, E 1.817, alpha 0.3473, beta 0.3672"),
    "unified-paper": Recipe(
        "the unified paper's Llama/C4 capacity curve (arXiv 2506.01863): gives rho, not loss",
        None, "unified", {},
        "published: L 1.0 ± 0.7, F 0.41 ± 0.02, C 1.39 ± 0.08; L is held at 1 (its ± is its "
        "trade-off with the unpublished A), F and C drawn with their ± as standard errors"),
}


def is_builtin(ref: str | os.PathLike) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


def load_fit(ref: str | os.PathLike) -> FitResult:
    """A fit from a JSON file written by ``capscale fit -o``, or ``builtin:NAME``."""
    if is_builtin(ref):
        return builtin_fit(str(ref)[len(PREFIX):])
    return FitResult.load(ref)


def _recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise CapscaleError(f"no builtin fit {name!r}; choose one of "
                            + ", ".join(PREFIX + k for k in RECIPES))
    return RECIPES[name]


def _data_hash(recipe: Recipe) -> str:
    """sha256 of the shipped file(s) the recipe reads (nothing for the published curve)."""
    if recipe.table is None:
        return ""
    from capscale.laws.datasets import _read

    files = {"quest": ["quest_runs.csv"], "chinchilla": ["chinchilla_epoch_ai.csv"]}[recipe.table]
    h = hashlib.sha256()
    for f in files:
        h.update(_read(f).read_bytes())
    return h.hexdigest()


def _cache_path(name: str, recipe: Recipe) -> Path:
    from capscale.cache import cache_root

    key = json.dumps([name, RECIPE_VERSION, recipe.table, recipe.law, recipe.options,
                      _data_hash(recipe), __version__, SCHEMA, N_BOOTSTRAP], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "fits" / f"{name}-{digest}.json"


def builtin_fit(name: str, *, rebuild: bool = False) -> FitResult:
    """The builtin fit ``name``, built on first use (tens of seconds to a few minutes for the
    QuEST fits: a multi-start fit and 1000 bootstrap refits) and read from the cache after."""
    recipe = _recipe(name)
    path = _cache_path(name, recipe)
    if path.exists() and not rebuild:
        try:
            return FitResult.load(path)
        except CapscaleError:
            pass  # a damaged cache entry is rebuilt
    from capscale.data.cachedir import file_lock

    with file_lock(path.with_suffix(".lock")):
        if path.exists() and not rebuild:
            try:
                return FitResult.load(path)
            except CapscaleError:
                pass
        import sys

        print(f"building {PREFIX}{name} once ({recipe.description}); it is cached in "
              f"{path.parent}", file=sys.stderr, flush=True)
        fit = build(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fit.to_json(path)
    # the first use answers from the stored copy too, so that it prints the very numbers
    # every later use will (the stored form rounds what the fitter held in memory)
    try:
        return FitResult.load(path)
    except CapscaleError:
        return fit


def build(name: str, n_bootstrap: int = N_BOOTSTRAP) -> FitResult:
    """Build a builtin fit from its recipe (no cache)."""
    recipe = _recipe(name)
    if recipe.table is None:
        fit = paper_curve_fit()
    else:
        from capscale.laws.datasets import load_builtin

        fit = fit_law(load_builtin(recipe.table), recipe.law, n_bootstrap=n_bootstrap, seed=0,
                      **recipe.options)
    fit.info["provenance"] = {
        "builtin": PREFIX + name, "description": recipe.description,
        "recipe": {"table": recipe.table and PREFIX + recipe.table, "law": recipe.law,
                   "options": recipe.options, "n_bootstrap": n_bootstrap if recipe.table else None},
        "data_sha256": _data_hash(recipe) or None, "capscale": __version__,
        "notes": recipe.notes,
    }
    return fit


def paper_curve_fit(seed: int = 0) -> FitResult:
    """The published Llama/C4 curve as a unified fit over weights and activations (their
    capacities multiply). A and B are unknown (NaN), so losses are NaN; ρ is defined."""
    from capscale.capacity.law import UNIFIED_LLAMA_C4_FIT, UNIFIED_LLAMA_C4_SOURCE

    law = UnifiedLaw(["all"], capacity_groups="single")
    law.centers = (0.0, 0.0)
    pub = dict(UNIFIED_LLAMA_C4_FIT)
    pub["L"] = (pub["L"][0], 0.0)  # see the module docstring
    values = {"A": math.nan, "B": math.nan, **{k: v for k, (v, _) in pub.items()}}
    natural = np.array([values[n] for n in law.natural_names])
    rng = np.random.default_rng(seed)
    draws = np.empty((PAPER_DRAWS, len(natural)))
    for j, n in enumerate(law.natural_names):
        if n in pub:
            mean, se = pub[n]
            x = rng.normal(mean, se, PAPER_DRAWS)
            while (bad := x <= 0).any():  # truncated at zero: these are positive constants
                x[bad] = rng.normal(mean, se, int(bad.sum()))
            draws[:, j] = x
        else:
            draws[:, j] = math.nan
    with np.errstate(invalid="ignore"):
        theta = law.from_natural(natural)
        samples = law.from_natural(draws)
    lo, hi = np.percentile(draws, [2.5, 97.5], axis=0)
    info = {
        "schema": SCHEMA, "law": law.name, "formula": law.formula, "reference": law.reference,
        "intervals": nest_params(law.natural_names, [[float(a), float(b)] for a, b in zip(lo, hi)]),
        "rmse_loss": math.nan, "rmse_log_loss": math.nan,
        "settings": {"interval_level": 0.95},
        "data": {"hash": "published constants", "n_runs": 0, "source": UNIFIED_LLAMA_C4_SOURCE,
                 "columns": ["N", "D", "loss", "w_format", "a_format"]},
        "derived_eff": {}, "heldout": None,
        "warnings": ["A and B are not published: this fit gives capacities (rho), not losses"],
        "gives": "rho",
    }
    return FitResult(law, theta, samples, info)


def residual_scale(fit: FitResult) -> tuple[float, str]:
    """A robust estimate of the loss noise of the runs behind a fit, and what it is: for a
    builtin fit, 1.4826 × the median absolute deviation of its residuals on the shipped runs
    (misfit of a few formats does not inflate it); otherwise the fit's residual RMSE."""
    recipe = (fit.info.get("provenance") or {}).get("recipe") or {}
    table = recipe.get("table")
    if table and is_builtin(table):
        from capscale.laws.datasets import load_builtin

        df = load_builtin(table[len(PREFIX):])
        X = fit.law.design(df)
        r = np.exp(fit.law.log_predict(fit.theta[None, :], X)[0]) - df["loss"].to_numpy()
        mad = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        return mad, f"robust sd (1.4826·MAD) of the residuals of {fit.info['provenance']['builtin']}"
    v = fit.info.get("rmse_loss")
    if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
        return float(v), "residual RMSE of the prior fit (seed noise and misfit together)"
    raise CapscaleError("the prior carries no residual error to take the noise from; give "
                        "--noise (the loss's standard deviation across seeds, in nats)")


def describe_builtins() -> str:
    return "\n".join(f"{PREFIX}{k}: {r.description}" for k, r in RECIPES.items())
