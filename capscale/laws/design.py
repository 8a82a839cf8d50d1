"""How precisely a set of runs would pin each format's capacity ρ, before any run is trained.

Two answers, one fast and one faithful:

- :func:`expected_halfwidths`: the asymptotic covariance of capscale's own estimator (the
  Huber fit on log loss) at a prior law, from the law's Jacobian. For a Huber M-estimator
  with Gaussian noise this is the sandwich A⁻¹·B·A⁻¹ (Godambe information; with δ → ∞ it is
  the inverse Fisher information of least squares), so it is cheap enough to score
  thousands of candidate designs.
- :func:`simulate_design`: draw the losses of the runs from the prior with Gaussian noise,
  refit each draw with the same Huber objective and L-BFGS that :func:`~capscale.laws.fit_law`
  uses (all draws as one batched problem), and read the spread of the refitted ρ. Slower, but
  it needs no asymptotics, so it confirms what the first one predicts.

``runs`` is a runs table without losses: ``N``, ``D`` and the representation (``w_format`` and
``a_format``, or ``format``); a ``seed`` column marks replicas (each row is a run with its
own noise). The prior is a :class:`~capscale.laws.FitResult` or any callable giving the true
loss of each run (an array, or a DataFrame with ``loss`` and, optionally, ``eff``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import norm

from capscale.errors import CapscaleError
from capscale.laws import representation as rep
from capscale.laws.fit import FitResult, FitSettings, fit_once
from capscale.laws.forms import ChinchillaLaw, Design, Law, make_law
from capscale.laws.optim import HuberObjective, batched_lbfgs, single_threaded_blas

NOT_IDENTIFIED_FACTOR = 100.0  # a 95% range wider than this factor identifies nothing
MIN_OK_FRACTION = 0.95  # ...nor does a design whose refits fail more often than 1 in 20
Prior = FitResult | Callable[[pd.DataFrame], object]


# ---------------------------------------------------------------- the truth at the prior


def _check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(runs, pd.DataFrame) or len(runs) == 0:
        raise CapscaleError("a design is a non-empty runs table (columns N, D, w_format, a_format)")
    missing = [c for c in ("N", "D") if c not in runs.columns]
    if missing:
        raise CapscaleError(f"design runs need columns N and D; missing {missing}")
    rep.part_columns(runs)
    df = runs.reset_index(drop=True).copy()
    for c in ("N", "D"):
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64)
        if not np.all(np.isfinite(v) & (v > 0)):
            raise CapscaleError(f"design runs: {c} must be finite and positive in every row")
        df[c] = v
    return df


def true_values(runs: pd.DataFrame, prior: Prior) -> tuple[np.ndarray, np.ndarray | None]:
    """The prior's loss for every run and its capacity multiplier (None when the prior gives
    none)."""
    if isinstance(prior, FitResult):
        X = prior.law.design(runs)
        loss = np.exp(prior.law.log_predict(prior.theta[None, :], X)[0])
        eff = prior.law.eff(prior.theta[None, :], X)[0] if prior.law.has_eff else None
        return loss, eff
    if not callable(prior):
        raise CapscaleError("the prior must be a fit (FitResult) or a callable giving each run's loss")
    out = prior(runs)
    eff = None
    if isinstance(out, pd.DataFrame):
        if "loss" not in out.columns:
            raise CapscaleError("a prior that returns a DataFrame must give a 'loss' column")
        for name in ("eff", "rho"):
            if name in out.columns:
                eff = out[name].to_numpy(np.float64)
        out = out["loss"]
    loss = np.asarray(out, dtype=np.float64).reshape(-1)
    if loss.shape != (len(runs),) or not np.all(np.isfinite(loss) & (loss > 0)):
        raise CapscaleError("the prior must give one finite positive loss per run")
    return loss, eff


def _compressed_keys(df: pd.DataFrame) -> tuple[list[str], list[int]]:
    """The compressed representations of a table (in order of appearance) and a row of each."""
    keys = rep.representation_keys(df)
    dense = rep.dense_rows(df)
    seen: dict[str, int] = {}
    for i, (k, d) in enumerate(zip(keys, dense)):
        if not d and k not in seen:
            seen[k] = i
    return list(seen), list(seen.values())


def refit_law(df: pd.DataFrame, law: str, prior: Prior, true_loss: np.ndarray,
              true_eff: np.ndarray | None, law_options: dict | None = None,
              settings: FitSettings | None = None) -> tuple[Law, np.ndarray]:
    """The law the experiment will be fitted with, bound to the design, and its parameters
    on noise-free losses (the point every simulated fit scatters around).

    A decoupled refit of a Chinchilla-family prior is exact: the prior's A, α, B, β, E with
    each format's multiplier. Otherwise the law is fitted to the noise-free losses."""
    sim = df.copy()
    sim["loss"] = true_loss
    the_law = make_law(law, sim, **(law_options or {}))
    if (the_law.name == "decoupled" and isinstance(prior, FitResult)
            and isinstance(prior.law, ChinchillaLaw) and true_eff is not None):
        base = prior.natural[:5]
        X = the_law.design(sim)
        eff = np.empty(len(the_law.keys))
        for j in range(len(the_law.keys)):
            rows = np.flatnonzero(X.extra["onehot"][:, j] > 0)
            eff[j] = float(np.median(true_eff[rows]))
        theta = the_law.from_natural(np.concatenate([base, eff]))
        r = HuberObjective(the_law, X, true_loss).residuals(theta)
        if np.all(np.abs(r) < 1e-9):
            return the_law, theta
    ms, _ = fit_once(the_law, sim, settings or FitSettings())
    return the_law, ms.theta


def as_fit(runs: pd.DataFrame, prior: Prior, law: str = "decoupled", **law_options) -> FitResult:
    """A callable prior as a fit of ``law`` to its noise-free losses on ``runs`` (done once,
    so that later designs over subsets of these runs need no multi-start fit)."""
    if isinstance(prior, FitResult):
        return prior
    df = _check_runs(runs)
    loss, eff = true_values(df, prior)
    the_law, theta = refit_law(df, law, prior, loss, eff, law_options)
    from capscale.laws.fit import SCHEMA

    info = {"schema": SCHEMA, "law": the_law.name, "rmse_loss": 0.0,
            "settings": {"interval_level": 0.95},
            "data": {"columns": rep.part_columns(df)}, "derived_eff": {}}
    return FitResult(the_law, theta, None, info)


# ---------------------------------------------------------------- asymptotic precision


def _jacobian(fn: Callable[[np.ndarray], np.ndarray], theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of fn (rows of parameter vectors -> (S, n)), as (n, P)."""
    P = theta.size
    E = np.eye(P) * h
    out = fn(np.concatenate([theta[None, :] + E, theta[None, :] - E]))
    return ((out[:P] - out[P:]) / (2 * h)).T


def huber_weights(sigma_log: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """E[ψ'(r)] and E[ψ(r)²] for r ~ N(0, s²) and ψ the Huber score clip(r, −δ, δ)."""
    s = np.maximum(np.asarray(sigma_log, dtype=np.float64), 1e-300)
    c = delta / s
    inside = 2 * norm.cdf(c) - 1
    psi2 = s**2 * (inside - 2 * c * norm.pdf(c)) + 2 * delta**2 * norm.sf(c)
    return inside, psi2


class Precision:
    """Per-run information of a design at the prior: sums over any subset of rows give that
    subset's asymptotic covariance of the fitted parameters and the half-width of every ρ."""

    def __init__(self, law: Law, theta: np.ndarray, X: Design, true_loss: np.ndarray,
                 noise: float, keys: list[str], key_rows: list[int], *, delta: float = 1e-3,
                 level: float = 0.95):
        self.law, self.theta, self.keys = law, theta, keys
        self.z = float(norm.ppf(0.5 + level / 2))
        J = _jacobian(lambda t: law.log_predict(t, X), theta)  # d log loss / dθ, (n, P)
        w1, w2 = huber_weights(noise / true_loss, delta)
        self.A = np.einsum("ip,iq->ipq", J * w1[:, None], J)  # (n, P, P)
        self.B = np.einsum("ip,iq->ipq", J * w2[:, None], J)
        le = _jacobian(lambda t: np.log(law.eff(t, X)), theta)  # (n, P)
        self.G = le[key_rows]  # gradient of log ρ of each key, (K, P)
        self.rho = law.eff(theta[None, :], X)[0][key_rows]

    def halfwidths(self, counts: np.ndarray) -> np.ndarray:
        """Half-width of each ρ for designs given as run counts per row, (M, n) -> (M, K).
        Designs that leave a ρ unidentified (or that have no runs) give inf."""
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        A = np.einsum("mi,ipq->mpq", counts, self.A)
        B = np.einsum("mi,ipq->mpq", counts, self.B)
        M, P = A.shape[0], A.shape[1]
        out = np.full((M, len(self.keys)), np.inf)
        scale = np.trace(A, axis1=1, axis2=2) / P
        live = scale > 0
        if not live.any():
            return out
        # A parameter the design cannot pin (say E of a fit where E → 0) leaves A singular;
        # it matters only if ρ depends on it. Solve with two tiny ridges: where ρ's variance
        # does not move, ρ is identified whatever happens along the singular direction.
        eye = np.eye(P)[None]
        G = np.broadcast_to(self.G.T, (int(live.sum()),) + self.G.T.shape)
        var = []
        for lam in (1e-10, 1e-8):
            Ar = A[live] + lam * scale[live, None, None] * eye
            AiG = np.linalg.solve(Ar, G)  # (M, P, K)
            var.append(np.einsum("mpk,mpq,mqk->mk", AiG, B[live], AiG))
        v1, v2 = var
        stable = np.isfinite(v1) & (np.abs(v1 - v2) <= 1e-3 * np.abs(v1) + 1e-300)
        hw = self.z * self.rho * np.sqrt(np.maximum(v1, 0.0))
        out[live] = np.where(stable, hw, np.inf)
        return out


def expected_halfwidths(runs: pd.DataFrame, prior: Prior, *, noise: float,
                        law: str = "decoupled", level: float = 0.95, delta: float = 1e-3,
                        **law_options) -> pd.DataFrame:
    """Asymptotic half-width of the ``level`` interval of each compressed format's ρ when
    ``runs`` are trained with loss noise ``noise`` (nats) and fitted with ``law``."""
    df = _check_runs(runs)
    _check_noise(noise)
    loss, eff = true_values(df, prior)
    the_law, theta = refit_law(df, law, prior, loss, eff, law_options)
    keys, rows = _compressed_keys(df)
    prec = Precision(the_law, theta, the_law.design(df), loss, noise, keys, rows,
                     delta=delta, level=level)
    hw = prec.halfwidths(np.ones(len(df)))[0]
    return pd.DataFrame({"format": keys, "rho": prec.rho, "half_width": hw})


def _check_noise(noise: float) -> None:
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise > 0):
        raise CapscaleError(f"noise must be a positive number of nats (loss sd across seeds), not {noise!r}")


# ---------------------------------------------------------------- simulation


def simulate_design(runs: pd.DataFrame, prior: Prior, *, noise: float, n_sims: int = 200,
                    law: str = "decoupled", seed: int = 0, level: float = 0.95,
                    delta: float = 1e-3, n_bootstrap: int = 0, bootstrap_sims: int = 20,
                    **law_options) -> pd.DataFrame:
    """Simulate ``n_sims`` experiments of ``runs`` and report how well each pins ρ.

    Each experiment draws every run's loss as the prior's loss plus N(0, noise²) and refits
    ``law`` with capscale's objective (Huber ``delta`` on log loss) and batched L-BFGS,
    started, like the bootstrap of :func:`~capscale.laws.fit_law`, at the noise-free optimum.
    With ``n_bootstrap`` > 0, the first ``bootstrap_sims`` experiments are also bootstrapped
    (that many resamples each), giving the half-width a user of one experiment would see.

    Returns one row per compressed format (representation key): ``rho_true`` (the prior's),
    ``rho_fit`` (the refit law on noise-free losses; differs from ``rho_true`` only when the
    refit law cannot represent the prior), ``rho_median``, ``rho_lo``, ``rho_hi`` (the central
    ``level`` range of the refitted ρ), ``half_width`` ((hi − lo)/2), ``bias`` (median −
    true), ``bootstrap_half_width`` (median over bootstrapped experiments; NaN without),
    ``n_ok`` (refits that converged to a finite optimum) and ``identified``.
    """
    t0 = time.perf_counter()
    df = _check_runs(runs)
    _check_noise(noise)
    if not (isinstance(n_sims, int) and n_sims >= 20):
        raise CapscaleError(f"n_sims must be an integer of at least 20, not {n_sims!r}")
    if not 0 < level < 1:
        raise CapscaleError(f"level must lie in (0, 1), not {level}")
    loss, eff = true_values(df, prior)
    if noise * 5 >= loss.min():
        raise CapscaleError(f"noise {noise} nats is not small against the losses "
                            f"(smallest {loss.min():.3g}); a loss cannot be negative")
    the_law, theta = refit_law(df, law, prior, loss, eff, law_options)
    X = the_law.design(df)
    keys, key_rows = _compressed_keys(df)
    if not keys:
        raise CapscaleError("the design has no compressed run; there is no ρ to measure")
    rng = np.random.default_rng(seed)
    Y = loss[None, :] + noise * rng.standard_normal((n_sims, len(df)))
    thetas, ok = _refit(the_law, X, Y, None, theta, delta)
    rho_sims = the_law.eff(thetas, X)[:, key_rows]  # (S, K)
    rho_sims[~ok] = np.nan
    q = 100 * (1 - level) / 2
    lo, med, hi = np.nanpercentile(rho_sims, [q, 50, 100 - q], axis=0)
    rho_fit = the_law.eff(theta[None, :], X)[0][key_rows]
    rho_true = eff[key_rows] if eff is not None else np.full(len(keys), np.nan)
    n_ok = np.isfinite(rho_sims).sum(0)

    boot_hw = np.full(len(keys), np.nan)
    if n_bootstrap > 0:
        boot_hw = _bootstrap_halfwidths(the_law, X, Y[:bootstrap_sims], thetas[:bootstrap_sims],
                                        n_bootstrap, key_rows, level, delta, seed)

    identified = (n_ok >= MIN_OK_FRACTION * n_sims) & (lo > 0) & (hi / np.maximum(lo, 1e-300) < NOT_IDENTIFIED_FACTOR)
    parts = rep.part_columns(df)
    out = pd.DataFrame({"format": keys})
    for c in parts:
        out[c] = df[c].astype(str).to_numpy()[key_rows]
    out["rho_true"] = rho_true
    out["rho_fit"] = rho_fit
    out["rho_median"] = med
    out["rho_lo"] = lo
    out["rho_hi"] = hi
    out["half_width"] = (hi - lo) / 2
    out["bias"] = med - np.where(np.isfinite(rho_true), rho_true, rho_fit)
    out["bootstrap_half_width"] = boot_hw
    out["n_ok"] = n_ok
    out["identified"] = identified
    out.loc[~identified, ["half_width", "rho_lo", "rho_hi"]] = np.nan
    out.attrs.update({"noise": noise, "n_sims": n_sims, "law": the_law.name, "level": level,
                      "n_runs": len(df), "seconds": round(time.perf_counter() - t0, 3)})
    return out


def _refit(law: Law, X: Design, Y: np.ndarray, weights: np.ndarray | None, theta: np.ndarray,
           delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Fit every row of Y (one experiment each) from the noise-free optimum and from a
    start with every multiplier at 1; keep the better end point of each."""
    S = Y.shape[0]
    starts = [theta]
    alt = law.from_natural(np.concatenate([law.to_natural(theta)[:5], np.ones(theta.size - 5)])) \
        if isinstance(law, ChinchillaLaw) and law.name == "decoupled" and theta.size > 5 else None
    if alt is not None and np.all(np.isfinite(alt)):
        starts.append(alt)
    k = len(starts)
    obj = HuberObjective(law, X, Y, delta=delta, weights=weights)
    x0 = np.tile(np.array(starts), (S, 1))
    rows = np.repeat(np.arange(S), k)
    with single_threaded_blas():
        res = batched_lbfgs(obj, x0, rows, maxiter=500, ftol=1e-10)
    f = res.f.reshape(S, k)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    thetas = res.x.reshape(S, k, -1)[np.arange(S), best]
    ok = np.isfinite(f[np.arange(S), best]) & np.all(np.isfinite(thetas), axis=1)
    return thetas, ok


def _bootstrap_halfwidths(law, X, Y, thetas, B, key_rows, level, delta, seed) -> np.ndarray:
    """Median over experiments of the bootstrap half-width of each ρ (B resamples each)."""
    S, n = Y.shape
    rng = np.random.default_rng(seed + 1)
    draws = rng.integers(0, n, size=(S * B, n))
    W = np.zeros((S * B, n))
    np.add.at(W, (np.repeat(np.arange(S * B), n), draws.ravel()), 1.0)
    Yrep = np.repeat(Y, B, axis=0)
    obj = HuberObjective(law, X, Yrep, delta=delta, weights=W)
    with single_threaded_blas():
        res = batched_lbfgs(obj, np.repeat(thetas, B, axis=0), np.arange(S * B), maxiter=500, ftol=1e-10)
    rho = law.eff(res.x, X)[:, key_rows].reshape(S, B, -1)
    rho[~np.isfinite(res.f).reshape(S, B)] = np.nan
    q = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(rho, [q, 100 - q], axis=1)
    return np.nanmedian((hi - lo) / 2, axis=0)


# ---------------------------------------------------------------- design search


def search_design(candidates: pd.DataFrame, prior: Prior, *, cost: np.ndarray, target,
                  noise: float, fixed: np.ndarray | None = None, law: str = "decoupled",
                  level: float = 0.95, delta: float = 1e-3, max_replicas: int = 16,
                  **law_options) -> tuple[np.ndarray, pd.DataFrame]:
    """The cheapest design found over ``candidates`` (one row per distinct run; a design
    gives each a count of seeds) whose asymptotic half-width of every compressed format's ρ
    is at most ``target`` (a number, or a dict key -> number).

    ``cost`` is each candidate's cost (accelerator-hours); ``fixed`` counts runs already done
    (they cost nothing and stay). The search starts from one seed of every candidate, adds
    the replica with the largest reduction of Σ_k (hw_k/target_k)² excess per unit cost while
    a target is missed, then removes, one at a time, the run whose removal raises
    Σ_k (hw_k/target_k)² least per unit cost saved while every target stays met (and the
    design keeps two runs more than the law has parameters).
    Returns the counts (excluding ``fixed``) and the predicted half-widths.
    """
    df = _check_runs(candidates)
    _check_noise(noise)
    n = len(df)
    cost = np.asarray(cost, dtype=np.float64)
    if cost.shape != (n,) or not np.all(np.isfinite(cost) & (cost > 0)):
        raise CapscaleError("search_design: cost must give a positive number per candidate run")
    fixed = np.zeros(n) if fixed is None else np.asarray(fixed, dtype=np.float64)
    loss, eff = true_values(df, prior)
    the_law, theta = refit_law(df, law, prior, loss, eff, law_options)
    keys, rows = _compressed_keys(df)
    if not keys:
        raise CapscaleError("the candidates have no compressed run; there is no ρ to measure")
    prec = Precision(the_law, theta, the_law.design(df), loss, noise, keys, rows,
                     delta=delta, level=level)
    t = np.array([target.get(k, math.nan) if isinstance(target, dict) else float(target)
                  for k in keys], dtype=np.float64)
    if not np.all(np.isfinite(t) & (t > 0)):
        raise CapscaleError(f"the target half-width must be positive for every format ({keys})")

    def score(hw):  # (M, K) -> Σ (hw/t)²; excess: only the part above the target
        r = (hw / t) ** 2
        return r.sum(1), np.maximum(r - 1.0, 0.0).sum(1)

    def met(hw):
        return np.all(hw <= t * (1 + 1e-9), axis=1)

    counts = np.where(fixed > 0, 0.0, 1.0)
    eye = np.eye(n)
    # forward: add replicas while a target is missed
    for _ in range(int(max_replicas * n)):
        hw = prec.halfwidths(fixed + counts)
        if met(hw)[0]:
            break
        _, ex0 = score(hw)
        trial = fixed + counts + eye
        _, ex = score(prec.halfwidths(trial))
        with np.errstate(invalid="ignore"):
            gain = (ex0[0] - ex) / cost
        gain[counts + fixed >= max_replicas] = -np.inf
        if not np.isfinite(ex0[0]):
            gain = np.where(np.isfinite(ex), 1.0 / cost, -np.inf)
        i = int(np.argmax(gain))
        if not np.isfinite(gain[i]) or gain[i] <= 0:
            break
        counts[i] += 1
    # backward: drop runs while every target stays met
    min_runs = theta.size + 2  # the fitter needs more runs than parameters; keep a margin
    while met(prec.halfwidths(fixed + counts))[0]:
        live = np.flatnonzero(counts > 0)
        if live.size == 0 or (fixed + counts).sum() - 1 < min_runs:
            break
        trial = fixed + counts - eye[live]
        hw = prec.halfwidths(trial)
        ok = met(hw)
        if not ok.any():
            break
        s, _ = score(hw)
        s0, _ = score(prec.halfwidths(fixed + counts))
        rate = np.where(ok, (s - s0[0]) / cost[live], np.inf)
        counts[live[int(np.argmin(rate))]] -= 1
    hw = prec.halfwidths(fixed + counts)[0]
    table = pd.DataFrame({"format": keys, "rho": prec.rho, "target": t, "half_width": hw,
                          "met": hw <= t * (1 + 1e-9)})
    return counts.astype(int), table
