"""The batched optimizer against scipy run one start at a time (the slow, obviously correct way)."""

import numpy as np
from scipy.optimize import minimize

from capscale.laws import load_builtin
from capscale.laws.forms import make_law
from capscale.laws.optim import (
    HuberObjective,
    batched_lbfgs,
    multistart,
    polish,
    single_threaded_blas,
)


def rosenbrock(x, rows=None):
    a, b = x[:, :-1], x[:, 1:]
    f = (100 * (b - a**2) ** 2 + (1 - a) ** 2).sum(1)
    g = np.zeros_like(x)
    g[:, :-1] += -400 * a * (b - a**2) - 2 * (1 - a)
    g[:, 1:] += 200 * (b - a**2)
    return f, g


def test_batched_lbfgs_solves_every_start_independently():
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-2, 2, size=(40, 4))
    res = batched_lbfgs(rosenbrock, x0, maxiter=3000, ftol=1e-15, gtol=1e-9)
    assert res.converged.all()
    _, g = rosenbrock(res.x)
    assert np.abs(g).max() < 1e-6  # every start ends at a stationary point
    # 4-D Rosenbrock has its minimum at (1, 1, 1, 1) and a local one near (-1, 1, 1, 1)
    assert set(np.round(res.f, 4)) <= {0.0, 3.7014}


def test_batched_lbfgs_matches_scipy_on_ill_conditioned_quadratics():
    rng = np.random.default_rng(1)
    P, S = 6, 12
    Q = [np.diag(np.logspace(0, 5, P))[np.ix_(p, p)] for p in (rng.permutation(P) for _ in range(S))]
    c = rng.standard_normal((S, P))

    def fun(x, rows):
        f = np.array([0.5 * x[i] @ Q[r] @ x[i] - c[r] @ x[i] for i, r in enumerate(rows)])
        g = np.array([Q[r] @ x[i] - c[r] for i, r in enumerate(rows)])
        return f, g

    res = batched_lbfgs(fun, np.zeros((S, P)), np.arange(S), maxiter=5000, ftol=1e-16, gtol=1e-11)
    for r in range(S):
        np.testing.assert_allclose(res.x[r], np.linalg.solve(Q[r], c[r]), rtol=1e-6, atol=1e-9)


def _objective():
    df = load_builtin("chinchilla")
    law = make_law("chinchilla", df)
    return law, HuberObjective(law, law.design(df), df["loss"].to_numpy())


def test_multistart_finds_what_a_per_start_scipy_loop_finds():
    law, obj = _objective()
    starts = law.start_grid()[np.random.default_rng(3).choice(4500, 80, replace=False)]
    best_loop = np.inf
    with single_threaded_blas():
        for x0 in starts:
            r = minimize(lambda x: tuple(v[0] for v in obj(x[None, :])), x0, jac=True,
                         method="L-BFGS-B")
            best_loop = min(best_loop, r.fun)
    ms = multistart(obj, starts)
    assert ms.value <= best_loop * (1 + 1e-9)
    ms_all = multistart(obj, starts, prune=False)
    assert abs(ms_all.value - ms.value) <= 1e-9 * ms.value


def test_bootstrap_weights_give_weighted_objective():
    law, _ = _objective()
    df = load_builtin("chinchilla")
    X = law.design(df)
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, size=(2, len(df))).astype(float)
    theta = law.start_grid()[[100, 2000]]
    multi = HuberObjective(law, X, df["loss"].to_numpy(), weights=w)
    f, g = multi(theta, np.array([0, 1]))
    for i in range(2):
        keep = np.repeat(np.arange(len(df)), w[i].astype(int))
        single = HuberObjective(law, law.design(df.iloc[keep]), df["loss"].to_numpy()[keep])
        fs, gs = single(theta[i:i + 1])
        np.testing.assert_allclose(f[i], fs[0], rtol=1e-12)
        np.testing.assert_allclose(g[i], gs[0], rtol=1e-9, atol=1e-12)


def test_polish_reaches_what_scipys_lbfgsb_reaches_at_tight_tolerances():
    law, obj = _objective()
    ms = multistart(obj, law.start_grid()[::15], n_polish=0)
    points = ms.finalists[:4]
    x, f = polish(obj, points)
    with single_threaded_blas():
        for x0, fp in zip(points, f):
            r = minimize(lambda x: tuple(v[0] for v in obj(x[None, :])), x0, jac=True,
                         method="L-BFGS-B", options={"maxiter": 5000, "maxcor": 20,
                                                     "ftol": 1e-15, "gtol": 1e-12})
            assert fp <= r.fun * (1 + 1e-12)
    np.testing.assert_allclose(law.to_natural(x[0]), law.to_natural(ms.finalists[0]), rtol=1e-5)
