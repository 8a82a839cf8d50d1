"""Paired comparison of formats under one fit: differences of loss and of ρ with intervals
from the same bootstrap resample for every format, and the probability that one beats the
other — at the same model size, at equal memory and at equal compute.

Marginal intervals of two formats overlap even when every resample ranks them the same way,
because most of their uncertainty (A, α, the curve's scale) is shared. Differences computed
resample by resample cancel it. Under a unified fit whose formats share one capacity curve,
ρ is increasing in log_{1/4} GMSE for every resample, so the ranking at equal N is decided by
the GMSE order alone (P = 0 or 1); the fit only sizes the gap. With a curve per compression
type, or a decoupled fit, the ranking rests on fitted parameters and P says how firmly.

Costs, as in :mod:`capscale.laws.compare`: memory counts the weights at their bits per value
(scales and masks included); compute counts bit operations relative to bf16, linearly
(max(b_w, b_a)/16) or quadratically (b_w·b_a/256), following Frantar et al. 2025.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.fit import FitResult, _percentiles
from capscale.laws.predict import outside_fitted


def parse_memory(text: str | float) -> float:
    """``"4GB"`` -> 4e9 bytes, ``"8GiB"`` -> 8·2^30 (the number grammar of
    :mod:`capscale.numbers`, with an optional trailing ``B`` for bytes); a bare number is bytes."""
    from capscale.numbers import NumberError, parse_number

    body = text
    if isinstance(text, str):
        m = re.fullmatch(r"(?i)(.*?[0-9kmgti])\s*b", text.strip())  # "4GB", "512 MB", "100b"
        body = m[1] if m else text
    try:
        return float(parse_number(body, lo=0, lo_open=True))
    except NumberError:
        raise CapscaleError(f"--memory {text!r}: give a positive size like 4GB, 512MB or 8GiB "
                            "(decimal k, M, G, T; binary Ki, Mi, Gi, Ti)") from None


def _pairs_of(fit: FitResult, specs: list[str], operands: str) -> tuple[list[dict], bool]:
    cols = fit.info["data"].get("columns", [])
    wa = "w_format" in cols or "a_format" in cols
    out = []
    for spec in specs:
        if wa:
            if rep.KEY_SEPARATOR in spec:
                w, a = (s.strip() for s in spec.split(rep.KEY_SEPARATOR, 1))
            else:
                w, a = spec, spec if operands == "both" else "none"
            out.append({"format": spec, "w_format": w, "a_format": a})
        else:
            out.append({"format": spec})
    return out, wa


def _bits(spec: str) -> float:
    try:
        return rep.spec_bits(spec)
    except CapscaleError:
        return math.nan


def _basis(fit: FitResult, a: dict, b: dict) -> str:
    """What decides the order of a and b at equal N."""
    law = fit.law
    if law.name != "unified":
        return "fitted multipliers"
    parts = [c for c in ("w_format", "a_format", "format") if c in a]
    try:
        groups, gm = set(), []
        for c in parts:
            for row in (a, b):
                spec = row[c]
                if rep.is_dense(spec):
                    continue
                kind = rep.spec_kind(spec)
                groups.add("all" if law.capacity_groups == "single" else kind)
        if len(groups) > 1:
            return "fitted capacity curves (one per compression type)"
        for c in parts:
            ga = 0.0 if rep.is_dense(a[c]) else rep.spec_gmse(a[c])
            gb = 0.0 if rep.is_dense(b[c]) else rep.spec_gmse(b[c])
            gm.append(np.sign(gb - ga))
    except CapscaleError:
        return "fitted capacity curve"
    signs = {s for s in gm if s != 0}
    if len(signs) <= 1:
        return "GMSE order alone (one capacity curve)"
    return "the curve's shape (weight and activation GMSE order disagree)"


def paired_compare(fit: FitResult, specs: list[str], *, N: float, D: float,
                   memory: float | str | None = None, equal_compute: bool = False,
                   operands: str = "both", level: float | None = None) -> dict[str, pd.DataFrame]:
    """Compare ``specs`` under ``fit`` at (N, D), and optionally at equal memory (the N each
    format fits in ``memory`` bytes of weights) and at equal compute (the N each format
    affords at the bit-operation cost of a dense N-parameter model, both counting rules).

    Returns ``{"formats": ..., "pairs": ...}``: per scenario, each format's N, loss, ρ and
    effective parameters N·ρ with intervals, and each pair (A, B) with the paired interval of
    loss_A − loss_B and ρ_A − ρ_B, and P(A better): the share of resamples where A's loss is
    lower (where the fit gives no loss, where A's N·ρ is larger), ties counting half.
    Each format's ``extrapolation`` says what of its N, D, tokens per parameter or GMSE lies
    outside the fitted runs (as :func:`~capscale.laws.predict` does), and
    ``formats.attrs["warnings"]`` holds the same as sentences.
    """
    if len(specs) < 2:
        raise CapscaleError("give two or more formats to compare")
    if operands not in ("both", "weights"):
        raise CapscaleError(f"operands must be 'both' or 'weights', not {operands!r}")
    if not (N > 0 and D > 0):
        raise CapscaleError("--n and --d must be positive")
    if not fit.law.has_eff:
        raise CapscaleError(f"law {fit.law.name!r} has no per-format capacity to compare")
    if fit.samples is None or not len(fit.samples):
        raise CapscaleError("the fit has no bootstrap samples; refit with --bootstrap B > 0")
    level = level or fit.info["settings"]["interval_level"]
    rows, wa = _pairs_of(fit, specs, operands)
    bw = np.array([_bits(r.get("w_format", r["format"])) for r in rows])
    ba = np.array([_bits(r.get("a_format", "none")) for r in rows]) if wa else np.full(len(rows), 16.0)
    scenarios = {"same N": np.full(len(rows), float(N))}
    if memory is not None:
        mem = parse_memory(memory)
        if not np.all(np.isfinite(bw)):
            raise CapscaleError("equal memory needs the bits per value of every format (free labels have none)")
        scenarios[f"equal memory ({mem / 1e9:.4g} GB of weights)"] = mem * 8.0 / bw
    if equal_compute:
        if not np.all(np.isfinite(bw) & np.isfinite(ba)):
            raise CapscaleError("equal compute needs the bits per value of every format")
        scenarios["equal compute, linear bit-ops"] = N * 16.0 / np.maximum(bw, ba)
        scenarios["equal compute, quadratic bit-ops"] = N * 256.0 / (bw * ba)

    fmt_rows, pair_rows, warnings = [], [], []
    for scen, Ns in scenarios.items():
        # on a weights/activations fit the label "format" is not a column of the law
        q = pd.DataFrame([{k: v for k, v in r.items() if k != "format" or not wa} for r in rows])
        q["N"], q["D"], q["loss"] = Ns, float(D), 1.0
        notes, warns = outside_fitted(fit, q)  # the same check and words as `predict`
        warnings += [w if scen == "same N" else f"{scen}: {w}" for w in warns]
        try:
            X = fit.law.design(q)
        except CapscaleError as e:
            raise CapscaleError(f"cannot compare these formats under this fit: {e}") from e
        with np.errstate(invalid="ignore"):
            loss0 = np.exp(fit.law.log_predict(fit.theta[None, :], X)[0])
            loss = np.exp(fit.law.log_predict(fit.samples, X))  # (S, F)
        rho0 = fit.law.eff(fit.theta[None, :], X)[0]
        rho = fit.law.eff(fit.samples, X)
        neff0, neff = Ns * rho0, Ns[None, :] * rho
        has_loss = bool(np.all(np.isfinite(loss0)))
        for i, r in enumerate(rows):
            lo_l, hi_l = _percentiles(loss[:, i], level)
            lo_r, hi_r = _percentiles(rho[:, i], level)
            fmt_rows.append({"scenario": scen, "format": r["format"], "N": Ns[i], "D": float(D),
                             "bits_weights": bw[i], "loss": loss0[i] if has_loss else math.nan,
                             "loss_lo": lo_l, "loss_hi": hi_l, "rho": rho0[i], "rho_lo": lo_r,
                             "rho_hi": hi_r, "N_eff": neff0[i], "extrapolation": notes[i]})
        for i, j in itertools.combinations(range(len(rows)), 2):
            dl = loss[:, i] - loss[:, j]
            dr = rho[:, i] - rho[:, j]
            if has_loss:
                win = np.mean((dl < 0) + 0.5 * (dl == 0))
            else:
                dn = neff[:, i] - neff[:, j]
                win = np.mean((dn > 0) + 0.5 * (dn == 0))
            lo_dl, hi_dl = _percentiles(dl, level)
            lo_dr, hi_dr = _percentiles(dr, level)
            same_n = scen == "same N"
            pair_rows.append({
                "scenario": scen, "A": rows[i]["format"], "B": rows[j]["format"],
                "d_loss": loss0[i] - loss0[j] if has_loss else math.nan,
                "d_loss_lo": lo_dl, "d_loss_hi": hi_dl,
                "d_rho": rho0[i] - rho0[j], "d_rho_lo": lo_dr, "d_rho_hi": hi_dr,
                "p_A_better": float(win), "decided_by": "loss" if has_loss else "N·rho",
                "basis": _basis(fit, rows[i], rows[j]) if same_n
                else "fitted law (sizes differ: the ranking also trades N against rho)"})
    formats = pd.DataFrame(fmt_rows)
    formats.attrs["warnings"] = list(dict.fromkeys(warnings))
    return {"formats": formats, "pairs": pd.DataFrame(pair_rows)}
