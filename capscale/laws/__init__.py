"""Scaling laws for training over compressed representations (numpy/scipy at the core).

Public API::

    from capscale.laws import load_runs, fit_law, FitResult, predict, compute_optimal
    df = load_runs("runs.csv", mapping="N=non_embedding_params,D=tokens")
    fit = fit_law(df, law="unified")            # or chinchilla, decoupled, precision, sparsity
    fit.to_json("fit.json"); fit = FitResult.load("fit.json")
    predict(fit, 1e9, 2e10, format="int4")     # loss with interval, eff, dense-equivalent N
    compute_optimal(fit, 1e21, format="int4")  # N*, D* for a FLOP budget
    compare_formats(fit, ["int4", "nvfp4"])    # capacity, per bit, per bit-op, Pareto front
    data_independence(df); composability(fit)  # checks of the laws' assumptions
"""

from capscale.laws.checks import composability, data_independence
from capscale.laws.compare import compare_formats, pareto_front
from capscale.laws.datasets import BUILTIN, load_builtin
from capscale.laws.fit import FitResult, fit_law
from capscale.laws.forms import LAWS, law_from_spec, make_law
from capscale.laws.predict import compute_optimal, predict, query_table
from capscale.laws.table import load_runs, validate_runs

__all__ = [
    "BUILTIN",
    "LAWS",
    "FitResult",
    "compare_formats",
    "composability",
    "compute_optimal",
    "data_independence",
    "fit_law",
    "law_from_spec",
    "load_builtin",
    "load_runs",
    "make_law",
    "pareto_front",
    "predict",
    "query_table",
    "validate_runs",
]
