"""Predictions from a fitted law: loss with intervals, the dense-equivalent size, and the
compute-optimal allocation of a budget between parameters and tokens."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from capscale import runrecord
from capscale.errors import CapscaleError, option
from capscale.laws.fit import FitResult, _percentiles
from capscale.laws.forms import ChinchillaLaw, SparsityLaw

# the GMSE in either spelling (gmse_w or w_gmse: one column, written gmse_w)
QUERY_COLUMNS = (*runrecord.quantity_columns(runrecord.GMSE), "kind", "w_kind", "a_kind",
                 "sparsity", "method", "w_method", "a_method", "bits", "w_bits", "a_bits")


def query_table(fit: FitResult, N=None, D=None, *, format: str | None = None,
                w_format: str | None = None, a_format: str | None = None,
                **columns) -> pd.DataFrame:
    """A runs table for ``fit`` to predict: every combination of the given N and D values,
    with the representation in the columns the fit was made with.

    A fit on a ``w_format``/``a_format`` table accepts ``format=SPEC`` as shorthand for the
    same spec on weights and activations, and ``gmse=G`` for the GMSE of every compressed
    operand. A GMSE is a representation of its own: given without a format, it stands for a
    format of that GMSE (unified fits). Extra ``columns`` (``gmse=...``, ``sparsity=...``,
    ``method=...``) are copied into every row; any other keyword is an error. The GMSE of
    one operand is written ``gmse_w`` / ``gmse_a``, as in a run's record, whichever way it
    was given (``w_gmse=`` reads as ``gmse_w=``).
    """
    unknown = sorted(set(columns) - set(QUERY_COLUMNS))
    if unknown:
        raise CapscaleError(
            f"predict got unknown argument(s) {unknown}; it takes N, D, format, w_format, "
            f"a_format, level and the columns {', '.join(QUERY_COLUMNS)}"
        )
    columns = _canonical_gmse({k: v for k, v in columns.items() if v is not None})
    cols = fit.info["data"].get("columns", [])
    Ns = np.atleast_1d(np.asarray(N if N is not None else [1.0], dtype=np.float64))
    Ds = np.atleast_1d(np.asarray(D if D is not None else [1.0], dtype=np.float64))
    if not (np.isfinite(Ns).all() and np.isfinite(Ds).all()) or (Ns <= 0).any() or (Ds <= 0).any():
        raise CapscaleError("N and D must be positive finite numbers")
    rows = [{"N": n, "D": d} for n, d in itertools.product(Ns, Ds)]
    df = pd.DataFrame(rows)
    gmse_keys = [k for k in (runrecord.GMSE, runrecord.GMSE_W, runrecord.GMSE_A) if k in columns]
    if gmse_keys and fit.law.name != "unified":
        raise CapscaleError(
            f"law {fit.law.name!r} does not predict from a GMSE (only a unified fit does); drop "
            f"{option('gmse')}" + (" and give the format" if fit.law.name == "decoupled" else "")
        )
    for k in gmse_keys:
        g = float(columns[k])
        if not 0 < g < 1:
            raise CapscaleError(f"{k} must lie in (0, 1) for a compressed representation, not {g!r}")
    two = "w_format" in cols or "a_format" in cols
    if two:
        if format is not None and (w_format is not None or a_format is not None):
            raise CapscaleError("give --format, or --w and --a, not both")
        w = w_format if w_format is not None else format
        a = a_format if a_format is not None else format
        targets = [p for p, spec in (("w", w), ("a", a)) if spec is not None] or ["w", "a"]
        for what in ("gmse", "kind", "method"):  # one value: every operand the query compresses
            if what in columns:
                v = columns.pop(what)
                for p in targets:
                    key = (runrecord.operand_key(what, p) if what == runrecord.GMSE
                           else runrecord.operand_alias(what, p))  # w_kind, w_method
                    columns.setdefault(key, v)
        for p in runrecord.OPERANDS:
            spec = w if p == "w" else a
            gkey = runrecord.operand_key(runrecord.GMSE, p)
            if spec is None and gkey in columns:
                spec = _gmse_label(columns[gkey])
            df[f"{p}_format"] = spec if spec is not None else "none"
    elif "format" in cols:
        if w_format is not None or a_format is not None:
            raise CapscaleError("this fit was made on a table with one 'format' per run: give --format")
        if format is None and "gmse" in columns:
            format = _gmse_label(columns["gmse"])
        df["format"] = format or "none"
    elif format or w_format or a_format or gmse_keys:
        raise CapscaleError(f"law {fit.law.name!r} was fitted without formats; drop --format")
    for k, v in columns.items():
        df[k] = v
    if fit.law.name == "unified":
        _fill_kinds(fit, df)
    df["loss"] = 1.0  # placeholder so the table validates; never read
    return df


def _canonical_gmse(columns: dict) -> dict:
    """``w_gmse`` / ``a_gmse`` renamed to the record's ``gmse_w`` / ``gmse_a`` (in place)."""
    out: dict = {}
    for key, value in columns.items():
        name = runrecord.GMSE_ALIASES.get(key, key)
        if name in out and out[name] != value:
            alias = next(a for a, n in runrecord.GMSE_ALIASES.items() if n == name)
            raise CapscaleError(f"{alias} and {name} name one GMSE, given as {out[name]!r} and "
                                f"{value!r}; give {name} alone")
        out[name] = value
    return out


def _gmse_label(g: float) -> str:
    """The name a format known only by its GMSE goes by."""
    return f"gmse={float(g):.6g}"


def _fill_kinds(fit: FitResult, df: pd.DataFrame) -> None:
    """A format known only by its GMSE has no compression type of its own: it takes the one
    capacity curve of the fit, or the user names it with ``kind``."""
    for col in [c for c in runrecord.REPRESENTATION_COLUMNS if c in df.columns]:
        spec = str(df[col].iloc[0])
        if not spec.startswith("gmse="):
            continue
        kcol = col.replace("format", "kind")
        if kcol in df.columns:
            continue
        groups = fit.law.groups
        if len(groups) != 1:
            raise CapscaleError(
                f"a format given by its GMSE alone could lie on any of this fit's capacity "
                f"curves ({', '.join(groups)}); give its spec ({option('format')}) or its type "
                f"({option('kind')})"
            )
        df[kcol] = groups[0].split("@")[0] if "@" in groups[0] else groups[0]
        if "method" in fit.law.capacity_groups and "@" in groups[0]:
            df[col.replace("format", "method")] = groups[0].split("@", 1)[1]


def predict(fit: FitResult, N, D, *, level: float | None = None, **representation) -> pd.DataFrame:
    """Loss at each (N, D) for one representation, with bootstrap intervals, the
    effective-parameter multiplier and the dense model size with the same loss.

    Every row outside what the fitted runs covered (N, D, tokens per parameter, or, for a
    unified fit, GMSE) says so in the column ``extrapolation``; the frame's
    ``attrs["warnings"]`` holds the same as sentences."""
    q = query_table(fit, N, D, **representation)
    out = fit.predict(q, level)
    res = q.drop(columns=["loss"]).copy()
    for c in out.columns:
        res[c] = out[c].to_numpy()
    if "eff" in res:
        res["N_dense_equivalent"] = res["N"] * res["eff"]
        if "eff_lo" in res:
            res["N_dense_equivalent_lo"] = res["N"] * res["eff_lo"]
            res["N_dense_equivalent_hi"] = res["N"] * res["eff_hi"]
    res["extrapolation"], res.attrs["warnings"] = outside_fitted(fit, q)
    return res


# relative slack before a query counts as outside the fitted range
RANGE_SLACK = 0.01


def outside_fitted(fit: FitResult, q: pd.DataFrame,
                   quantities=("N", "D", "tokens_per_param", "gmse")) -> tuple[list[str], list[str]]:
    """Per query row, what lies outside the fitted runs ('' when nothing), and one warning
    per quantity. ``quantities``: which of N, D, tokens per parameter and (unified fits) the
    GMSE to check; `predict`, `compare` and the paired comparison all say it this way."""
    ranges = fit.info["data"].get("ranges") or {}
    values = {}
    if "N" in q and "D" in q:
        values = {"N": q["N"].to_numpy(float), "D": q["D"].to_numpy(float),
                  "tokens_per_param": (q["D"] / q["N"]).to_numpy(float)}
    values = {k: v for k, v in values.items() if k in quantities}
    if fit.law.name == "unified" and "gmse" in ranges and "gmse" in quantities:
        from capscale.laws import representation as rep

        slots = rep.part_table(q, split_composed=getattr(fit.law, "split_composed", False))
        g = np.full(len(q), np.nan)
        for slot in slots:
            comp = slot["kind"] != "dense"
            g = np.where(comp & ~(slot["gmse"] <= g), slot["gmse"], g)  # the worst part
        values["gmse"] = g
    labels = {"N": "N", "D": "D", "tokens_per_param": "tokens per parameter", "gmse": "GMSE"}
    notes = [[] for _ in range(len(q))]
    warnings = []
    for key, v in values.items():
        if key not in ranges:
            continue
        lo, hi = ranges[key]
        out = (v < lo * (1 - RANGE_SLACK)) | (v > hi * (1 + RANGE_SLACK))
        if not out.any():
            continue
        for i in np.flatnonzero(out):
            notes[i].append(f"{labels[key]} {v[i]:.3g} outside fitted {lo:.3g}-{hi:.3g}")
        warnings.append(f"{labels[key]} {', '.join(f'{x:.3g}' for x in np.unique(v[out]))} lies "
                        f"outside the fitted runs' range ({lo:.3g} to {hi:.3g}): an extrapolation")
    return ["; ".join(n) for n in notes], warnings


def _power_form(law, theta: np.ndarray, X) -> tuple[np.ndarray, ...]:
    """(A', α, B, β, E) per parameter vector and run such that L = A'·N^(−α) + B·D^(−β) + E,
    for the laws whose multiplier does not depend on N or D."""
    theta = np.atleast_2d(theta)
    if hasattr(law, "full"):  # a law with fixed parameters: evaluate its base on full vectors
        theta, law = law.full(theta), law.base
    nat = law.to_natural(theta)
    if isinstance(law, ChinchillaLaw):
        le = np.broadcast_to(law.log_eff(theta[:, 5:], X), (theta.shape[0], X.n))
        alpha = nat[:, 1:2]
        A = nat[:, 0:1] * np.exp(-alpha * le)
        return A, alpha, nat[:, 2:3], nat[:, 3:4], nat[:, 4:5]
    if isinstance(law, SparsityLaw):
        a, b, c = nat[:, 0:1], nat[:, 1:2], nat[:, 2:3]
        A = a * np.exp(b * X.extra["log1mS"][None, :]) + c
        return A, nat[:, 3:4], nat[:, 4:5], nat[:, 5:6], nat[:, 6:7]
    raise CapscaleError(f"compute-optimal allocation is not available for law {law.name!r}")


def compute_optimal(fit: FitResult, compute, *, flops_per_param_token: float = 6.0,
                    level: float | None = None, **representation) -> pd.DataFrame:
    """The N and D = C/(k·N) that minimise the fitted loss at compute C (k = 6 FLOPs per
    parameter and token by default), for one representation, with bootstrap intervals.

    For L = A'·N^(−α) + B·D^(−β) + E the optimum is closed-form:
    N* = (α·A' / (β·B))^(1/(α+β)) · (C/k)^(β/(α+β)). N counts the model's parameters (for
    the sparsity law, its non-zero parameters); the compressed format enters through A'.
    """
    Cs = np.atleast_1d(np.asarray(compute, dtype=np.float64))
    if (Cs <= 0).any():
        raise CapscaleError("compute budgets must be positive")
    q = query_table(fit, [1.0], [1.0], **representation)
    X = fit.law.design(q)
    level = level or fit.info["settings"]["interval_level"]

    def solve(theta):
        A, a, B, b, E = (np.broadcast_to(v, (np.atleast_2d(theta).shape[0], 1))[:, 0]
                         for v in _power_form(fit.law, theta, X))
        with np.errstate(all="ignore"):
            G = (a * A / (b * B)) ** (1.0 / (a + b))
            CN = Cs[None, :] / flops_per_param_token
            N = G[:, None] * CN ** (b / (a + b))[:, None]
            D = CN / N
            L = A[:, None] * N ** -a[:, None] + B[:, None] * D ** -b[:, None] + E[:, None]
        return N, D, L

    N, D, L = solve(fit.theta[None, :])
    res = pd.DataFrame({"C": Cs, "N_opt": N[0], "D_opt": D[0], "loss": L[0],
                        "tokens_per_param": D[0] / N[0]})
    if fit.samples is not None and len(fit.samples):
        Nb, Db, Lb = solve(fit.samples)
        for name, arr in (("N_opt", Nb), ("D_opt", Db), ("loss", Lb)):
            lo, hi = _percentiles(arr, level, axis=0)
            res[f"{name}_lo"], res[f"{name}_hi"] = lo, hi
    for k, v in _canonical_gmse(representation).items():
        if v is not None:
            res[k] = v
    res.attrs["warnings"] = _extrapolation_warnings(fit, res)
    return res


def _extrapolation_warnings(fit: FitResult, res: pd.DataFrame) -> list[str]:
    """Say when an optimum lies outside what the fitted runs covered."""
    ranges = fit.info["data"].get("ranges")
    if not ranges:
        return []
    out = []
    lo, hi = ranges["tokens_per_param"]
    tpp = res["tokens_per_param"]
    if (tpp < lo / 2).any() or (tpp > hi * 2).any():
        out.append(f"the optimum's tokens per parameter ({tpp.min():.3g} to {tpp.max():.3g}) lie "
                   f"far outside the fitted runs' ({lo:.3g} to {hi:.3g}): an extrapolation the "
                   "runs do not support")
    nlo, nhi = ranges["N"]
    if (res["N_opt"] > 10 * nhi).any():
        out.append(f"the optimal N reaches {res['N_opt'].max():.3g}, more than 10x the largest "
                   f"fitted model ({nhi:.3g})")
    return out
