"""Capacity measured from training runs, not predicted: each representation's multiplier ρ
from the decoupled law against the table's own dense runs, with bootstrap intervals, beside the
prediction from its GMSE with the unified paper's constants. Where every compressed run shares
one token budget, ρ is read off the dense curve at that budget
(:mod:`capscale.laws.budget_fit`); otherwise the decoupled law is fitted across budgets.

A ρ whose interval is wider than :data:`IDENTIFIED_WIDTH` is marked not identified: the runs
do not pin it down, and a number shown without that mark would be read as a result.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from capscale.laws import representation as rep
from capscale.laws.budget_fit import BudgetFit, fit_at_budget
from capscale.laws.identify import IDENTIFIED_WIDTH  # one rule for every ρ


def rho_gmse(w_format: str, a_format: str = "none", constants: dict | None = None) -> float:
    """ρ predicted from GMSE alone: the product over the compressed operands of
    ρ(GMSE) = L·tanh(F·log_{1/4} GMSE)^C, by default with the unified paper's Llama/C4
    constants (L 1.0, F 0.41, C 1.39). Noise injection has a GMSE too (its relative MSE)."""
    from capscale.capacity import UNIFIED_LLAMA_C4, rho_unified

    c = constants or UNIFIED_LLAMA_C4
    out = 1.0
    for spec in (w_format, a_format):
        if not rep.is_dense(spec):
            out *= float(rho_unified(rep.spec_gmse(spec), **c))
    return out


def capacity_samples(fit) -> dict[str, np.ndarray]:
    """The bootstrap draws of every fitted multiplier, by representation key (joint draws:
    index i of every array comes from the same resample): a budget fit's, or a decoupled
    law fit's."""
    if isinstance(fit, BudgetFit):
        return dict(fit.draws)
    if fit.samples is None or fit.law.name != "decoupled":
        return {}
    nat = fit.law.to_natural(fit.samples)
    names = fit.law.natural_names
    return {k: nat[:, names.index(f"eff[{k}]")] for k in fit.law.keys}


def fitted_keys(fit) -> tuple[list[str], list[str]]:
    """(compressed keys, dense reference keys) of a budget fit or a decoupled law fit."""
    if isinstance(fit, BudgetFit):
        return list(fit.keys), list(fit.reference_keys)
    return list(fit.law.keys), list(fit.law.reference_keys)


def rho_with_interval(fit, key: str, level: float = 0.95) -> tuple[float, float, float]:
    if isinstance(fit, BudgetFit):
        return (fit.rho[key], *fit.interval(key, level))
    return fit.info.get("derived_eff", {}).get(key, (math.nan, math.nan, math.nan))


def is_identified(lo: float, hi: float, width: float = IDENTIFIED_WIDTH) -> bool:
    return bool(math.isfinite(lo) and math.isfinite(hi) and hi - lo < width)


def _at(D: np.ndarray, budget: float) -> np.ndarray:
    """The runs whose token budget is ``budget`` (up to float rounding of a stored D)."""
    return np.abs(D / budget - 1.0) < 1e-6


def shared_budget(df: pd.DataFrame) -> float | None:
    """The token budget every compressed run of ``df`` shares, when the dense runs hold three
    or more sizes there; else None (ρ then needs the whole law across budgets)."""
    dense = rep.dense_rows(df)
    D = df["D"].to_numpy(float)
    if dense.all() or not dense.any():
        return None
    budgets = np.unique(D[~dense])
    if budgets.size != 1 or budgets[0] <= 0:
        return None
    at = dense & _at(D, budgets[0])
    return float(budgets[0]) if df.loc[at, "N"].nunique() >= 3 else None


def runs_at_budget(df: pd.DataFrame, budget: float, key_columns: list[str] | None = None):
    """The runs of ``df`` at ``budget`` as the budget fit takes them: (runs, compressed keys,
    dense keys, each run's key index: −1 for a dense run)."""
    sub = df[_at(df["D"].to_numpy(float), budget)].reset_index(drop=True)
    dense = rep.dense_rows(sub)
    keys = rep.representation_keys(sub, key_columns)
    compressed = sorted({k for k, d in zip(keys, dense) if not d})
    refs = sorted({k for k, d in zip(keys, dense) if d})
    index = [-1 if d else compressed.index(k) for k, d in zip(keys, dense)]
    return sub, compressed, refs, index


def fit_budget(df: pd.DataFrame, budget: float, *, n_bootstrap: int = 400, seed: int = 0,
               key_columns: list[str] | None = None) -> BudgetFit:
    """The decoupled law at ``budget`` (:mod:`capscale.laws.budget_fit`) on the runs there."""
    sub, compressed, refs, index = runs_at_budget(df, budget, key_columns)
    return fit_at_budget(sub["N"].to_numpy(float), sub["loss"].to_numpy(float), index,
                         compressed, refs, budget, n_bootstrap=n_bootstrap, seed=seed)


def describe_method(fit) -> str:
    if isinstance(fit, BudgetFit):
        return (f"decoupled law at the compressed runs' budget (D = {fit.budget:,.0f} tokens): "
                f"E* + A·N^(−α) fitted to the {fit.n_dense} dense runs there, each format's ρ "
                f"from its own runs on that curve ({fit.n_runs} runs), residual bootstrap")
    return "decoupled law fitted to every run (all budgets), bootstrap over runs"


def measured_capacity(df: pd.DataFrame, fit=None, *, n_bootstrap: int = 400, seed: int = 0,
                      key_columns: list[str] | None = None, level: float = 0.95,
                      width: float = IDENTIFIED_WIDTH, method: str = "auto"
                      ) -> tuple[pd.DataFrame, object]:
    """One row per compressed representation of ``df``: ρ, its interval at ``level``, whether
    it is identified (interval narrower than ``width``), the runs behind it, and ``rho_gmse``.

    ``method``: ``budget`` reads ρ off the dense curve at the one budget all compressed runs
    share; ``law`` fits the decoupled law to every run; ``auto`` takes ``budget`` where the
    design allows it (dense runs at three or more sizes at that budget). A given ``fit`` (a
    decoupled FitResult or a BudgetFit) is used as it is. Returns (table, fit)."""
    from capscale.laws.fit import fit_law

    if method not in ("auto", "budget", "law"):
        raise ValueError(f"method {method!r}: use auto, budget or law")
    if fit is None:
        budget = shared_budget(df) if method != "law" else None
        if method == "budget" and budget is None:
            from capscale.errors import CapscaleError

            raise CapscaleError("ρ at one budget needs every compressed run at one token budget "
                                "and dense runs at 3 or more sizes there")
        if budget is not None:
            fit = fit_budget(df, budget, n_bootstrap=n_bootstrap, seed=seed,
                             key_columns=key_columns)
        else:
            fit = fit_law(df, "decoupled", n_bootstrap=n_bootstrap, seed=seed, level=level,
                          heldout=False, key_columns=key_columns)
    keys = rep.representation_keys(df, key_columns if isinstance(fit, BudgetFit)
                                   else getattr(fit.law, "key_columns", None))
    rows = []
    for key in fitted_keys(fit)[0]:
        sub = df[[k == key for k in keys]]
        w, a = str(sub["w_format"].iloc[0]), str(sub["a_format"].iloc[0])
        v, lo, hi = rho_with_interval(fit, key, level)
        rows.append({"format": key, "w_format": w, "a_format": a, "runs": int(len(sub)),
                     "rho": v, "lo": lo, "hi": hi, "width": hi - lo,
                     "identified": is_identified(lo, hi, width),
                     "rho_gmse": rho_gmse(w, a)})
    table = pd.DataFrame(rows)
    if len(table):
        # ρ's interval narrows about as 1/√(runs): the multiple of the runs at this budget
        # (seeds of each) that would bring it to the identification width
        table["more_runs"] = [math.nan if r["identified"] or not math.isfinite(r["width"])
                              else (r["width"] / width) ** 2 for _, r in table.iterrows()]
    table.attrs["method"] = describe_method(fit)
    if isinstance(fit, BudgetFit) and len(table):
        n = df.loc[[k in set(table["format"]) for k in keys], "N"].to_numpy(float)
        table.attrs["scatter"] = fit.residual_sd
        table.attrs["slope"] = curve_slope(fit, float(np.exp(np.mean(np.log(n)))))
    return table, fit


def curve_slope(fit: BudgetFit, n: float) -> float:
    """How many nats the dense curve E* + A·N^(−α) falls per e-fold of N at ``n``: a loss gap
    g moves log ρ by g / slope."""
    return float(fit.alpha * fit.A * n ** (-fit.alpha))


def why_not_identified(table: pd.DataFrame) -> str:
    """One sentence on why the unidentified ρ of ``table`` are so: the runs' scatter against
    the slope of the dense curve, and about how many more runs would identify each."""
    missed = table[~table["identified"]] if len(table) else table
    if not len(missed):
        return ""
    sd, slope = table.attrs.get("scatter", math.nan), table.attrs.get("slope", math.nan)
    parts = []
    if math.isfinite(sd) and math.isfinite(slope) and slope > 0:
        parts.append(f"the runs scatter by {sd:.3f} nats around the fitted curves, which fall "
                     f"{slope:.2f} nats per e-fold of N at these sizes, so one run places log ρ "
                     f"only to about ±{sd / slope:.2f}")
    need = [f"{r['format']} about {r['more_runs']:.1f}×" for _, r in missed.iterrows()
            if math.isfinite(r.get("more_runs", math.nan))]
    if need:
        parts.append("the runs at this budget (more seeds) that would narrow each interval to "
                     f"{IDENTIFIED_WIDTH}: {', '.join(need)}")
    return "; ".join(parts)


def ratio_interval(fit, num: str, den: str | list[str], level: float = 0.95) -> tuple[float, float, float]:
    """ρ[num] / ∏ρ[den] with a percentile interval from the joint bootstrap draws: e.g. the
    W×A multiplier against the product of its W-only and A-only marginals (composability),
    or one format's capacity against another's. Dense keys count as exactly 1."""
    return _joint_interval(fit, [num], [den] if isinstance(den, str) else list(den), level)


def product_interval(fit, keys: list[str], level: float = 0.95) -> tuple[float, float, float]:
    """∏ρ[keys] with a percentile interval from the joint bootstrap draws: what composability
    predicts for the representation that applies them all (ρ(W)·ρ(A))."""
    return _joint_interval(fit, list(keys), [], level)


def _joint_interval(fit, num: list[str], den: list[str], level: float) -> tuple[float, float, float]:
    """∏ρ[num] / ∏ρ[den], the point from the estimates and the interval from the joint draws
    (one resample's values of every key together, so what they share cancels)."""
    draws = capacity_samples(fit)
    refs = fitted_keys(fit)[1]

    def value(k):
        return 1.0 if k in refs else rho_with_interval(fit, k, level)[0]

    def sample(k):
        return np.ones(1) if k in refs else draws.get(k, np.full(1, np.nan))

    point = math.prod(value(k) for k in num) / math.prod(value(k) for k in den)
    s = np.ones(1)
    for k in num:
        s = s * sample(k)
    for k in den:
        s = s / sample(k)
    if s.size < 2 or not np.all(np.isfinite(s)):
        return point, math.nan, math.nan
    a = (1 - level) / 2
    lo, hi = np.quantile(s, [a, 1 - a])
    return float(point), float(lo), float(hi)


def unidentified_reasons(table: pd.DataFrame) -> dict[int, str]:
    """Row position -> why its ρ is not identified, for reports that grey those numbers."""
    out = {}
    for i, (_, r) in enumerate(table.iterrows()):
        if not r["identified"]:
            out[i] = describe_rho(r)
    return out


# the columns of a measured-capacity table that carry the measured number
MEASURED_COLUMNS = ["rho", "lo", "hi", "width"]


def describe_rho(row) -> str:
    """``0.67 [0.62, 0.71]``, or why the number is not shown."""
    v, lo, hi = row["rho"], row["lo"], row["hi"]
    if not math.isfinite(v):
        return "not fitted"
    if not row["identified"]:
        if math.isfinite(lo) and math.isfinite(hi):
            return f"not identified (95% interval {lo:.2g} to {hi:.2g}, wider than {IDENTIFIED_WIDTH})"
        return "not identified (no interval)"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
