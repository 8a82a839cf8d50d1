"""Huber objective and a multi-start L-BFGS that runs all starting points at once.

Chinchilla's Approach 3 refines each of thousands of starting points with L-BFGS and keeps
the best. Looping over ``scipy.optimize.minimize`` costs one Python round trip per function
evaluation per start; here the starts are rows of one array and every L-BFGS step (two-loop
recursion, Armijo backtracking, curvature test) is done for all of them with numpy, so one
function evaluation serves every start. The few best end points are then polished to tight
tolerances (:func:`polish`), so the winner is converged to the last digits that matter.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from capscale.laws.forms import Design, Law

_blas_limited = 0  # depth of single_threaded_blas contexts open in this process


@contextlib.contextmanager
def single_threaded_blas():
    """A context in which BLAS runs on one thread.

    The fit makes many thousands of tiny BLAS calls (matrix-vector products on blocks of
    parameter vectors). A multi-threaded OpenBLAS wakes its thread pool for each of them, and
    on a machine whose cores are busy that makes each call up to a hundred times slower.
    Setting the limit looks up every loaded library (10-20 ms), so inside an open context a
    nested one sets nothing (and a worker forked inside one inherits the limit).
    """
    global _blas_limited
    if _blas_limited:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it the fit is still correct, only slower when busy
        limits = contextlib.nullcontext()
    else:
        limits = threadpool_limits(limits=1, user_api="blas")
    _blas_limited += 1
    try:
        with limits:
            yield
    finally:
        _blas_limited -= 1


# Parameter vectors are evaluated in blocks whose (rows, n) float64 temporaries stay under
# glibc's default mmap threshold (128 KiB): larger temporaries are mmap'ed and page-faulted
# afresh on every allocation, which made evaluation four times slower.
BLOCK_BYTES = 96 * 1024


class HuberObjective:
    """Σ_i w_i · huber_δ(r_i) / (δ · Σ_i w_i) with r = log L̂ − log L (``space="log"``,
    Chinchilla's choice) or r = L̂ − L (``space="linear"``).

    Dividing by δ·Σw changes no minimiser and makes the value read as a mean absolute
    residual wherever |r| > δ, which keeps tolerances meaningful for any δ and table size.
    ``weights`` (B, n) gives each of B problems its own row weights (bootstrap resamples),
    and ``loss`` (B, n) its own losses (simulated experiments); ``rows`` then says which
    problem each parameter vector belongs to.
    """

    def __init__(self, law: Law, X: Design, loss: np.ndarray, *, delta: float = 1e-3,
                 space: str = "log", weights: np.ndarray | None = None) -> None:
        if space not in ("log", "linear"):
            raise ValueError(f"space must be 'log' or 'linear', not {space!r}")
        self.law, self.X, self.delta, self.space = law, X, float(delta), space
        self.y = np.asarray(loss, dtype=np.float64)
        self.logy = np.log(self.y)
        w = np.ones((1, X.n)) if weights is None else np.atleast_2d(np.asarray(weights, float))
        self.weights = w
        self.norm = 1.0 / (self.delta * w.sum(1))  # (B,)
        self.n_evals = 0

    def residuals(self, theta: np.ndarray) -> np.ndarray:
        lp = self.law.log_predict(np.atleast_2d(theta), self.X)
        return lp - self.logy if self.space == "log" else np.exp(lp) - self.y

    def _targets(self, y: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return y[rows] if y.ndim == 2 else y

    def value(self, theta: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        return self(theta, rows)[0]

    def __call__(self, theta: np.ndarray, rows: np.ndarray | None = None):
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        S = theta.shape[0]
        if rows is None:
            rows = np.zeros(S, dtype=int)
        f = np.empty(S)
        g = np.empty_like(theta)
        block = max(4, BLOCK_BYTES // (8 * self.X.n))
        # The terms are logs of loss components (a few units at most at any sensible point),
        # so exp() needs no max-shift; an overflow far from the data gives a non-finite
        # value, which the line search rejects.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for lo in range(0, S, block):
                hi = min(S, lo + block)
                f[lo:hi], g[lo:hi] = self._block(theta[lo:hi], rows[lo:hi])
        self.n_evals += S
        return f, g

    def _block(self, theta, rows):
        """f and g for a block of parameter vectors (under the errstate of ``__call__``)."""
        d = self.delta
        # Terms below −700 are clipped: their exp (< 1e-304) is nothing next to the
        # others, and a subnormal result sends exp() down a path forty times slower.
        # (np.maximum and np.minimum, not np.clip: same values, a fraction of the overhead)
        E = [np.maximum(t, -700.0) for t in self.law.terms(theta, self.X)]
        for e in E:
            np.exp(e, out=e)
        s = E[0] + E[1]
        for e in E[2:]:
            s += e
        if self.space == "log":
            r = np.log(s)
            r -= self._targets(self.logy, rows)
        else:
            r = s - self._targets(self.y, rows)
        psi = np.maximum(r, -d)
        np.minimum(psi, d, out=psi)
        h = np.multiply(psi, 0.5)  # huber(r) = psi·(r − psi/2) for both branches
        np.subtract(r, h, out=h)
        h *= psi
        if self.weights.shape[0] > 1:
            w = self.weights[rows]
            norm = self.norm[rows]
            f = np.einsum("sn,sn->s", w, h) * norm
            psi *= w
            psi *= norm[:, None]
        else:
            norm = self.norm[0]
            f = h.sum(1) * norm
            psi *= norm
        if self.space == "log":
            psi /= s  # d log s / d t_k = E_k / s
        W = [np.multiply(e, psi, out=e) if e.shape == psi.shape else psi * e for e in E]
        g = self.law.terms_vjp(theta, self.X, W)
        bad = ~(np.isfinite(f) & np.isfinite(g).all(1))
        if bad.any():
            f[bad] = np.inf
            g[bad] = 0.0
        return f, g


@dataclass
class LbfgsResult:
    x: np.ndarray
    f: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray


@dataclass
class _LbfgsState:
    """What each of S starts carries from one L-BFGS iteration to the next."""

    x: np.ndarray  # (S, P) current points
    f: np.ndarray  # (S,) values there
    g: np.ndarray  # (S, P) gradients there
    rows: np.ndarray  # (S,) which problem each start belongs to (passed on to ``fun``)
    s_mem: np.ndarray  # (S, m, P) steps of the last m iterations, slot k % m
    y_mem: np.ndarray  # (S, m, P) gradient changes of the same iterations
    rho: np.ndarray  # (S, m) 1 / (s·y) per pair; 0 = pair unusable or forgotten
    gamma: np.ndarray  # (S,) initial inverse-Hessian scale; 0 = no pair yet
    nit: np.ndarray  # (S,) iterations taken
    converged: np.ndarray  # (S,) stopped by a tolerance or for want of a descent step
    active: np.ndarray  # (S,) still iterating

    @classmethod
    def start(cls, fun, x0: np.ndarray, rows: np.ndarray | None, memory: int,
              initial_scale: float | None = None) -> _LbfgsState:
        x = np.array(x0, dtype=np.float64)
        S, P = x.shape
        rows = np.zeros(S, dtype=int) if rows is None else np.asarray(rows)
        f, g = fun(x, rows)
        return cls(x=x, f=f, g=g, rows=rows, s_mem=np.zeros((S, memory, P)),
                   y_mem=np.zeros((S, memory, P)), rho=np.zeros((S, memory)),
                   gamma=np.full(S, initial_scale or 0.0), nit=np.zeros(S, dtype=int),
                   converged=np.zeros(S, dtype=bool), active=np.isfinite(f))


def batched_lbfgs(fun, x0: np.ndarray, rows: np.ndarray | None = None, *, maxiter: int = 500,
                  memory: int = 10, ftol: float = 1e-12, gtol: float = 1e-10,
                  max_linesearch: int = 40, max_step: float | None = None,
                  initial_scale: float | None = None) -> LbfgsResult:
    """Minimise ``fun`` from every row of ``x0`` at once with L-BFGS.

    ``fun(X, rows) -> (f (S,), g (S, P))``. Each start keeps its own curvature pairs, step
    length and stopping state; a start stops when its relative decrease falls below ``ftol``
    or its gradient's max-norm below ``gtol``, when no step satisfies the Armijo condition,
    or at ``maxiter``. Starts that evaluate to a non-finite value are dropped at once. With
    ``max_step``, a trial step that would move any coordinate further than that is shortened
    to it before the line search starts. The first step is −``initial_scale``·g where given
    (1 in coordinates scaled to a unit Hessian: a Newton step), else 0.1 along −g/|g|.

    Every iteration is three steps over the starts still active: a search direction from
    each start's curvature pairs (:func:`_search_direction`), a backtracking line search
    that evaluates all pending trial points together (:func:`_armijo_backtrack`), and the
    update of the pairs and stopping states (:func:`_accept_steps`).
    """
    state = _LbfgsState.start(fun, x0, rows, memory, initial_scale)
    for k in range(maxiter):
        idx = np.flatnonzero(state.active)
        if idx.size == 0:
            break
        d, gd = _search_direction(state, idx, k)
        x_new, f_new, g_new, stalled = _armijo_backtrack(fun, state, idx, d, gd, max_linesearch,
                                                         max_step)
        _accept_steps(state, idx, k, x_new, f_new, g_new, stalled, ftol, gtol)
    return LbfgsResult(x=state.x, f=state.f, n_iter=state.nit, converged=state.converged)


def _search_direction(state: _LbfgsState, idx: np.ndarray, k: int):
    """The L-BFGS direction of the starts ``idx`` at iteration ``k`` (two-loop recursion,
    newest pair first) and its slope g·d. A start whose direction does not descend forgets
    its pairs and steps along its scaled negative gradient instead."""
    m = state.rho.shape[1]
    gi = state.g[idx]
    everyone = idx.size == state.x.shape[0]  # then the memory is read in place, not copied
    # slots not yet written (the first m iterations) hold zeros and would add exact zeros
    order = [(k - 1 - j) % m for j in range(min(k, m))]
    Sm = {j: state.s_mem[:, j] if everyone else state.s_mem[idx, j] for j in order}
    Ym = {j: state.y_mem[:, j] if everyone else state.y_mem[idx, j] for j in order}
    R = state.rho if everyone else state.rho[idx]
    q = gi.copy()
    alphas = []
    for j in order:
        a = R[:, j] * np.einsum("sp,sp->s", Sm[j], q)
        q -= a[:, None] * Ym[j]
        alphas.append(a)
    gnorm = np.linalg.norm(gi, axis=1)
    first = 0.1 / np.maximum(gnorm, 1e-300)
    gamma = state.gamma[idx]
    r = np.where(gamma > 0, gamma, first)[:, None] * q
    for j, a in zip(reversed(order), reversed(alphas)):
        b = R[:, j] * np.einsum("sp,sp->s", Ym[j], r)
        r += Sm[j] * (a - b)[:, None]
    d = -r
    gd = np.einsum("sp,sp->s", gi, d)
    reset = ~(gd < 0)
    if reset.any():  # not a descent direction: forget the curvature pairs
        d[reset] = -gi[reset] * first[reset, None]
        gd[reset] = np.einsum("sp,sp->s", gi[reset], d[reset])
        state.rho[idx[reset]] = 0.0
        state.gamma[idx[reset]] = 0.0
    return d, gd


def _armijo_backtrack(fun, state: _LbfgsState, idx: np.ndarray, d: np.ndarray, gd: np.ndarray,
                      max_linesearch: int, max_step: float | None = None, c1: float = 1e-4):
    """Armijo backtracking along ``d`` for the starts ``idx`` from step 1 (or the step that
    moves no coordinate further than ``max_step``), with quadratic interpolation; the trial points of all starts still pending are evaluated together.
    Returns the accepted points, values and gradients and the mask of starts for which no
    trial step was accepted (their rows of the others are unset)."""
    n, P = d.shape
    t = np.ones(n)
    if max_step is not None:
        with np.errstate(divide="ignore"):
            t = np.minimum(t, max_step / np.abs(d).max(1))
    x_new = np.empty((n, P))
    f_new = np.full(n, np.inf)
    g_new = np.zeros((n, P))
    pending = np.arange(n)
    fi = state.f[idx]
    for _ in range(max_linesearch):
        if pending.size == 0:
            break
        tp = t[pending]
        xt = state.x[idx[pending]] + tp[:, None] * d[pending]
        ft, gt = fun(xt, state.rows[idx[pending]])
        gdp = gd[pending]
        ok = ft <= fi[pending] + c1 * tp * gdp
        acc = pending[ok]
        x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
        # minimiser of the quadratic through f(0), f'(0) and f(t), kept in [0.1t, 0.5t]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            curv = ft - fi[pending] - gdp * tp
            t_q = -gdp * tp * tp / (2.0 * curv)
        t_q = np.where(np.isfinite(t_q), t_q, 0.1 * tp)
        t[pending] = np.clip(t_q, 0.1 * tp, 0.5 * tp)
        pending = pending[~ok]
    stalled = np.zeros(n, dtype=bool)
    stalled[pending] = True
    return x_new, f_new, g_new, stalled


def _accept_steps(state: _LbfgsState, idx: np.ndarray, k: int, x_new, f_new, g_new,
                  stalled: np.ndarray, ftol: float, gtol: float) -> None:
    """Move the starts ``idx`` that found a step, store their curvature pair in slot
    ``k % m`` (usable only where s·y > 0), and stop those that meet a tolerance or found no
    step (no descent step exists at machine precision)."""
    moved = ~stalled
    im = idx[moved]
    sv = x_new[moved] - state.x[im]
    yv = g_new[moved] - state.g[im]
    sy = np.einsum("sp,sp->s", sv, yv)
    yy = np.einsum("sp,sp->s", yv, yv)
    with np.errstate(all="ignore"):
        good = (sy > 1e-12 * np.sqrt(np.einsum("sp,sp->s", sv, sv) * yy)) & (yy > 1e-300)
        good &= np.isfinite(sy / yy)
    slot = k % state.rho.shape[1]
    state.s_mem[im, slot] = sv
    state.y_mem[im, slot] = yv
    state.rho[im, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
    state.gamma[im[good]] = sy[good] / yy[good]
    f_old = state.f[im]
    state.x[im], state.f[im], state.g[im] = x_new[moved], f_new[moved], g_new[moved]
    state.nit[im] += 1
    f_now = state.f[im]
    scale = np.maximum(np.maximum(np.abs(f_old), np.abs(f_now)), 1e-300)
    done = ((f_old - f_now) <= ftol * scale) | (np.abs(state.g[im]).max(1) <= gtol)
    state.converged[im[done]] = True
    state.active[im[done]] = False
    state.active[idx[stalled]] = False
    state.converged[idx[stalled]] = True


def curvature_scale(fun, theta: np.ndarray, *, step: float = 1e-5,
                    floor: float = 1e-8) -> np.ndarray | None:
    """A matrix C with C·Cᵀ the inverse Hessian of ``fun`` at ``theta``, for :class:`Rescaled`.

    The Hessian comes from central differences of the analytic gradient (steps of ``step``
    times max(1, |θ_j|), all 2P points in one call), symmetrised. A Huber objective's Hessian
    jumps where a residual crosses ±δ, and a direction the runs do not pin down is flat; so
    eigenvalues below ``floor`` times the largest are raised to it. The result only scales
    coordinates, so a rough Hessian costs iterations, never the optimum. None where the
    Hessian is not finite or has no positive eigenvalue.
    """
    theta = np.asarray(theta, dtype=np.float64)
    P = theta.size
    h = step * np.maximum(1.0, np.abs(theta))
    shifts = np.diag(h)
    _, g = fun(np.concatenate([theta + shifts, theta - shifts]), np.zeros(2 * P, dtype=int))
    H = (g[:P] - g[P:]) / (2.0 * h[:, None])
    H = 0.5 * (H + H.T)
    if not np.isfinite(H).all():
        return None
    lam, V = np.linalg.eigh(H)
    if not lam[-1] > 0:
        return None
    lam = np.maximum(lam, floor * lam[-1])
    return V / np.sqrt(lam)


class Rescaled:
    """``fun`` in the coordinates z of θ = θ0 + C·z (``C`` from :func:`curvature_scale`).

    Near a minimum θ0 with Hessian H and C·Cᵀ = H⁻¹ the Hessian in z is the identity, so
    L-BFGS started near θ0 (a bootstrap refit from the full fit's optimum) spends no
    iterations learning the problem's scales and correlations. The minimisers are the same
    points: z is an invertible linear change of coordinates.
    """

    def __init__(self, fun, theta0: np.ndarray, C: np.ndarray) -> None:
        self.fun, self.theta0, self.C = fun, np.asarray(theta0, dtype=np.float64), C
        self.C_inv = np.linalg.inv(C)

    def __call__(self, z: np.ndarray, rows: np.ndarray | None = None):
        f, g = self.fun(self.to_theta(z), rows)
        return f, g @ self.C

    def to_theta(self, z: np.ndarray) -> np.ndarray:
        return self.theta0 + z @ self.C.T

    def to_z(self, theta: np.ndarray) -> np.ndarray:
        return (theta - self.theta0) @ self.C_inv.T


LOG_BOUNDS = (-40.0, 80.0)


def polish(obj: HuberObjective, points: np.ndarray, maxiter: int = 5000,
           passes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Polish ``points`` (K, P) at tight tolerances, all at once: returns the polished
    points and their values.

    Batched L-BFGS (20 pairs, relative decrease 1e-15, gradient 1e-12) in coordinates scaled
    by the curvature at the best point (:class:`Rescaled`), starting with Newton steps. In a
    flat valley a run can stop while a fresh start from where it stopped still descends, so
    the pass is repeated, re-scaled at the new best point, until one improves no point by
    more than 1e-14 of its value (at most ``passes``). Log-scale parameters are kept in
    [e^−40, e^80] (a point outside has no value): far outside any real fit, but it stops a
    term that contributes nothing (say E → 0) from drifting towards −∞ for thousands of
    iterations.
    """
    log_idx = sorted(obj.law.log_params)
    x = np.array(points, dtype=np.float64)
    x[:, log_idx] = np.clip(x[:, log_idx], *LOG_BOUNDS)
    fun = _Boxed(obj, log_idx, LOG_BOUNDS)
    f = fun(x)[0]
    for _ in range(passes):
        x_new, f_new = _polish_pass(fun, x, int(np.argmin(f)), maxiter)
        gained = f_new < f - 1e-14 * np.abs(f)
        better = f_new < f
        x[better], f[better] = x_new[better], f_new[better]
        if not gained.any():
            break
    return x, f


def _polish_pass(fun, x: np.ndarray, best: int, maxiter: int):
    """One polishing run of every point, scaled at the point ``best``."""
    C = curvature_scale(fun, x[best])
    if C is None:
        res = batched_lbfgs(fun, x, maxiter=maxiter, memory=20, ftol=1e-15, gtol=1e-12)
        return res.x, res.f
    scaled = Rescaled(fun, x[best], C)
    res = batched_lbfgs(scaled, scaled.to_z(x), maxiter=maxiter, memory=20, ftol=1e-15,
                        gtol=1e-12, initial_scale=1.0)
    return scaled.to_theta(res.x), res.f


class _Boxed:
    """``fun`` with no value (inf) where a coordinate in ``idx`` leaves [lo, hi]."""

    def __init__(self, fun, idx: list[int], bounds: tuple[float, float]) -> None:
        self.fun, self.idx, (self.lo, self.hi) = fun, idx, bounds

    def __call__(self, x: np.ndarray, rows: np.ndarray | None = None):
        f, g = self.fun(x, rows)
        xi = x[:, self.idx]
        out = ((xi < self.lo) | (xi > self.hi)).any(1)
        f[out], g[out] = np.inf, 0.0
        return f, g


# Far from the data most residuals sit on the linear arms of the Huber loss, the objective is
# nearly flat in some directions, and the first quasi-Newton steps of a start there come out
# up to 1e11 long: cutting them back by interpolation took a third of the function
# evaluations of the first pruning round. Ten units in any fitted coordinate (ten e-folds of
# a scale, ten in an exponent) is longer than any step that helps rank a start after a few
# dozen iterations, so the pruning rounds start their line searches there at most. Runs to
# convergence are not capped: from far away they would take more iterations to arrive.
MAX_STEP = 10.0


@dataclass
class MultiStartResult:
    theta: np.ndarray  # the winner (P,)
    value: float
    finalists: np.ndarray  # (K, P) end points of the starts that ran to convergence, best first
    finalist_values: np.ndarray  # (K,)
    stats: dict = field(default_factory=dict)


def multistart(obj: HuberObjective, starts: np.ndarray, *,
               schedule: tuple[tuple[int, float], ...] = ((10, 0.1), (40, 0.1)),
               min_keep: int = 64, maxiter: int = 400, ftol: float = 1e-10, n_polish: int = 8,
               prune: bool = True, max_step: float | None = MAX_STEP) -> MultiStartResult:
    """Refine every starting point with batched L-BFGS and return the best optimum.

    With ``prune`` (the default) this is successive halving: for each ``(iterations,
    fraction)`` of ``schedule``, all surviving starts take that many more L-BFGS iterations
    and only the best ``fraction`` of them (at least ``min_keep``) go on; the survivors then
    run to convergence (``ftol``, ``maxiter``). A start still far behind after tens of
    quasi-Newton steps sits in another basin, or is drifting into a flat region, and does not
    win. With ``prune=False`` every start runs to convergence. The ``n_polish`` best distinct
    end points within 5% of the best objective are polished (:func:`polish`); the best
    polished point wins, and each polished point replaces its unpolished self among the
    finalists. In the pruning rounds no L-BFGS trial step is longer than ``max_step`` in any
    coordinate (see :data:`MAX_STEP`).
    """
    with single_threaded_blas():
        return _multistart(obj, starts, schedule, min_keep, maxiter, ftol, n_polish, prune,
                           max_step)


def _multistart(obj, starts, schedule, min_keep, maxiter, ftol, n_polish, prune, max_step):
    t0 = time.perf_counter()
    starts = np.asarray(starts, dtype=np.float64)
    n0 = obj.n_evals
    x, iters = starts, np.zeros(len(starts), dtype=int)
    rounds = schedule if prune else ()
    for n_iter, fraction in rounds:
        if len(x) <= min_keep:
            break
        res = batched_lbfgs(obj, x, maxiter=n_iter, ftol=ftol, max_step=max_step)
        n_keep = max(min_keep, int(round(fraction * len(x))))
        order = np.argsort(res.f, kind="stable")[:n_keep]
        order = order[np.isfinite(res.f[order])]
        x, iters = res.x[order], iters[order] + res.n_iter[order]
    res = batched_lbfgs(obj, x, maxiter=maxiter, ftol=ftol)
    x_end, f_end, iters = res.x, res.f, iters + res.n_iter
    if not np.isfinite(f_end).any():
        from capscale.errors import CapscaleError

        raise CapscaleError(
            "no starting point gave a finite fit objective; the law cannot describe these runs"
        )
    t1 = time.perf_counter()
    order = np.argsort(f_end, kind="stable")
    order = order[np.isfinite(f_end[order])]
    x_end, f_end = x_end[order], f_end[order]
    near = np.flatnonzero(f_end <= f_end[0] * 1.05 + 1e-12)
    chosen = np.array(_distinct(x_end, near, n_polish), dtype=int)
    if chosen.size:
        xp, fp = polish(obj, x_end[chosen])
        better = np.isfinite(fp) & (fp <= f_end[chosen])
        x_end[chosen[better]], f_end[chosen[better]] = xp[better], fp[better]
    order = np.argsort(f_end, kind="stable")
    x_end, f_end = x_end[order], f_end[order]
    stats = {
        "n_starts": int(len(starts)),
        "n_converged_runs": int(len(x)),
        "pruned": bool(rounds) and len(x) < len(starts),
        "median_iterations": float(np.median(iters)),
        "function_evaluations_per_start": (obj.n_evals - n0) / max(1, len(starts)),
        "seconds_batched": round(t1 - t0, 4),
        "seconds_polish": round(time.perf_counter() - t1, 4),
    }
    return MultiStartResult(theta=x_end[0].copy(), value=float(f_end[0]), finalists=x_end,
                            finalist_values=f_end, stats=stats)


def _distinct(x: np.ndarray, candidates: np.ndarray, k: int, rtol: float = 1e-6) -> list[int]:
    """Up to k indices among ``candidates`` (best first) whose rows of x differ."""
    out: list[int] = []
    if k <= 0:
        return out
    for i in candidates:
        if all(np.max(np.abs(x[i] - x[o]) / (np.abs(x[o]) + 1e-8)) > rtol for o in out):
            out.append(int(i))
        if len(out) == k:
            break
    return out
