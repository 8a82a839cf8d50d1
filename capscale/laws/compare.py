"""Comparing formats through a fitted law: capacity, capacity per bit of storage
(iso-memory) and per unit of compute (bit operations), and the Pareto front over bits.

The capacity ρ of a format is the multiplier of its runs for a decoupled fit, and, for a
unified fit, the capacity law evaluated at the format's GMSE — also for formats that were
never trained, which is the point of the unified law: compare before training.

Costs, relative to dense bf16 (16 bits), with b_w and b_a the storage bits per value of the
weight and activation formats (scales, masks and indices included):

- memory: b_w / 16 (weights); "effective parameters per bit" is ρ / b_w, and the iso-memory
  gain over bf16 is ρ · 16 / b_w;
- compute, counted two ways as in Frantar et al. 2025 (arXiv 2502.16440): *linear*, a
  multiply-accumulate costs in proportion to the width of its wider operand,
  max(b_w, b_a) / 16; *quadratic*, in proportion to the product of the widths (a
  multiplier's area), b_w · b_a / 256. Sparsity is counted through the bits per value.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.fit import FitResult
from capscale.laws.identify import MAX_RATIO, fit_unidentified
from capscale.laws.predict import outside_fitted

# formats compared when none are named (a unified fit predicts each from its GMSE)
STANDARD_PANEL = ["int1", "int2", "int3", "int4", "int8", "int2:had", "int3:had", "int4:had",
                  "e2m1", "e4m3", "nf4", "mxfp4", "mxfp6_e2m3", "mxfp8_e4m3", "nvfp4",
                  "sparse0.5", "2:4", "sparse0.5+int4", "2:4+int4", "vq4:b8"]


def _split_pair(spec: str) -> tuple[str, str] | None:
    if rep.KEY_SEPARATOR in spec:
        w, a = spec.split(rep.KEY_SEPARATOR, 1)
        return w, a
    return None


def compare_formats(fit: FitResult, specs: list[str] | None = None, *, operands: str = "both",
                    level: float | None = None, bits: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per format: ρ with its interval, where ρ comes from (fitted multiplier or GMSE
    through the capacity law), whether the fit's runs include the format (``trained``), bits
    per value, ρ per bit, ρ per unit of compute (linear and
    quadratic counting), ranks and the Pareto front over bits per value.

    ``specs`` are format specs; on a fit made with weight and activation formats, ``int4`` is
    applied to both operands (``operands="both"``) or to the weights only
    (``operands="weights"``), and ``W/A`` (``int4:had/none``) names both explicitly.
    Bits per value come from the formats library; ``bits`` gives them for free labels
    (otherwise their per-bit columns are NaN).
    """
    if operands not in ("both", "weights"):
        raise CapscaleError(f"operands must be 'both' or 'weights', not {operands!r}")
    cols = fit.info["data"].get("columns", [])
    wa = "w_format" in cols or "a_format" in cols
    trained = fit.info.get("derived_eff", {})
    if specs is None:
        if fit.law.name == "unified":
            specs = STANDARD_PANEL
        elif trained:
            specs = [k for k in trained if not _all_dense(k)]
        else:
            raise CapscaleError(f"law {fit.law.name!r} has no per-format capacity to compare")
    unid = fit_unidentified(fit)
    rows = []
    for spec in specs:
        pair = _split_pair(spec) if wa else None
        if wa:
            w, a = pair if pair else (spec, spec if operands == "both" else "none")
            row = {"format": spec, "w_format": w, "a_format": a}
            key = f"{w}{rep.KEY_SEPARATOR}{a}"
        else:
            row = {"format": spec}
            key = spec
        rows.append((row, key))
    q = pd.DataFrame([r for r, _ in rows])
    q["N"], q["D"], q["loss"] = 1.0, 1.0, 1.0
    query = q.drop(columns=["format"]) if wa else q
    out = []
    for i, (row, key) in enumerate(rows):
        try:
            pred = fit.predict(query.iloc[[i]], level)
        except CapscaleError as e:
            raise CapscaleError(f"cannot compare {row['format']!r}: {e}") from e
        p = pred.iloc[0]
        if "eff" not in p:
            raise CapscaleError(f"law {fit.law.name!r} has no per-format capacity to compare")
        w = row.get("w_format", row["format"])
        a = row.get("a_format", "none" if not wa else row["a_format"])
        bw, ba = _bits(w, bits), _bits(a, bits)
        rho = float(p["eff"])
        lo, hi = float(p.get("eff_lo", math.nan)), float(p.get("eff_hi", math.nan))
        source = ("capacity law at its GMSE" if fit.law.name == "unified"
                  else "multiplier fitted to its runs")
        rec = {**row, "rho": rho, "rho_lo": lo, "rho_hi": hi, "source": source,
               "trained": key in trained,
               "bits_weights": bw, "bits_activations": ba if wa else math.nan,
               "rho_per_bit": rho / bw, "iso_memory_gain": rho * 16.0 / bw}
        if wa:
            lin = max(bw, ba) / 16.0
            quad = bw * ba / 256.0
            rec.update({"cost_linear": lin, "cost_quadratic": quad,
                        "rho_per_compute_linear": rho / lin, "rho_per_compute_quadratic": rho / quad})
        if fit.law.name == "unified":
            rec["gmse"] = _gmse_or_nan(w)
        why = _why_unidentified(fit, unid, key, query.iloc[[i]], lo, hi)
        rec["identified"], rec["why_not_identified"] = why is None, why or ""
        out.append(rec)
    df = pd.DataFrame(out)
    # a format whose GMSE lies outside the fitted runs' is read off an extrapolated curve
    df["extrapolation"], warnings = outside_fitted(fit, query, quantities=("gmse",))
    known = np.isfinite(df["bits_weights"].to_numpy())
    df["pareto_bits"] = False
    df.loc[known, "pareto_bits"] = pareto_front(df.loc[known, "bits_weights"].to_numpy(),
                                                df.loc[known, "rho"].to_numpy())
    for col in ("rho", "rho_per_bit", "rho_per_compute_linear", "rho_per_compute_quadratic"):
        if col in df:
            df[f"rank_{col}"] = df[col].rank(ascending=False, method="min").astype("Int64")
    df = df.sort_values("rho", ascending=False).reset_index(drop=True)
    df.attrs["warnings"] = warnings
    return df


def _why_unidentified(fit: FitResult, unid: dict, key: str, query: pd.DataFrame, lo: float,
                      hi: float) -> str | None:
    """Why a format's ρ is not identified by the fit (None when it is): its own multiplier,
    the capacity curve it is read from, or its interval."""
    if f"eff[{key}]" in unid:
        return unid[f"eff[{key}]"]
    if fit.law.name == "unified":
        for slot in rep.part_table(query, split_composed=fit.law.split_composed):
            for g in fit.law._group_names(slot):
                for letter in ("L", "F", "C", "A_rho", "B_rho"):
                    name = fit.law.natural_name(letter, g) if g is not None else None
                    if name in unid:
                        return f"{name}: {unid[name]}"
    if "alpha" in unid:
        return f"alpha: {unid['alpha']}"
    if math.isfinite(lo) and math.isfinite(hi) and lo > 0 and hi / lo > MAX_RATIO:
        return f"its interval spans {lo:.3g} to {hi:.3g}"
    return None


def _all_dense(key: str) -> bool:
    return rep.is_dense_key(key)


def _bits(spec: str, given: dict | None) -> float:
    if given and spec in given:
        return float(given[spec])
    try:
        return rep.spec_bits(spec)
    except CapscaleError:
        return math.nan  # a free label: capacity is known, its storage cost is not


def _gmse_or_nan(spec: str) -> float:
    try:
        return rep.spec_gmse(spec)
    except CapscaleError:
        return math.nan


def pareto_front(cost: np.ndarray, value: np.ndarray) -> np.ndarray:
    """True where no other point has cost ≤ and value ≥ with one of them strict."""
    cost, value = np.asarray(cost, float), np.asarray(value, float)
    on = np.ones(len(cost), dtype=bool)
    for i in range(len(cost)):
        dominated = (cost <= cost[i]) & (value >= value[i]) & ((cost < cost[i]) | (value > value[i]))
        on[i] = not dominated.any()
    return on
