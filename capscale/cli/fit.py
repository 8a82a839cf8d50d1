"""`capscale fit TABLE --law LAW`: fit a scaling law to a runs table."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT0, COUNT1, FRACTION, INTEGER, POSITIVE

HELP = "fit a scaling law (chinchilla, decoupled, unified, precision, sparsity) to a runs table"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("table", help="runs table: .csv, .parquet, .jsonl, .json, a folder of run "
                                 "folders, or builtin:NAME (chinchilla, quest, frantar-t5, ...)")
    p.add_argument("--law", default=None,
                   choices=["chinchilla", "decoupled", "unified", "precision", "sparsity"],
                   help="law to fit (default: from the columns: chinchilla for dense runs, "
                        "decoupled when any run is compressed)")
    p.add_argument("-o", "--output", metavar="FIT.json", help="write the fit as JSON")
    p.add_argument("--plot", metavar="DIR", help="write plots (loss vs N, predicted vs measured, ...)")
    p.add_argument("--map", action="append", metavar="NEW=OLD,...",
                   help="rename columns, e.g. --map N=non_embedding_params,D=tokens")
    p.add_argument("--derive", action="append", metavar="NAME=EXPR",
                   help="compute a column, e.g. --derive 'D=C/(6*N)'")
    p.add_argument("--where", metavar="EXPR",
                   help="fit only the runs matching a pandas query, e.g. "
                        "\"~method.str.startswith('Trust')\" or 'tokens_per_param > 90'")
    p.add_argument("--drop-bad", action="store_true",
                   help="drop bad rows (missing or non-positive values, duplicates, diverged runs) "
                        "instead of stopping")
    g = p.add_argument_group("fitting")
    g.add_argument("--delta", type=POSITIVE, default=1e-3, help="Huber delta (default 1e-3)")
    g.add_argument("--space", choices=["log", "linear"], default="log",
                   help="residuals on log loss (default, Chinchilla) or on loss")
    g.add_argument("--bootstrap", type=COUNT0, default=1000, metavar="B",
                   help="bootstrap resamples for intervals (default 1000; 0 for none)")
    g.add_argument("--level", type=FRACTION, default=0.95, help="interval level (default 0.95)")
    g.add_argument("--seed", type=INTEGER, default=0)
    g.add_argument("--jobs", type=COUNT1, default=None,
                   help="processes for the bootstrap (default: all cores, when its refits take "
                        "long enough to pay for starting them; otherwise one)")
    g.add_argument("--no-heldout", action="store_true", help="skip the held-out fit")
    g.add_argument("--no-prune", action="store_true",
                   help="run every starting point to convergence (slower; same optimum in practice)")
    g.add_argument("--max-starts", type=COUNT1, default=None,
                   help="cap on starting points for laws with more than five parameters")
    law = p.add_argument_group("law options")
    law.add_argument("--eff-key", metavar="COL,...",
                     help="decoupled: key the multipliers on these columns (default: the format "
                          "columns), e.g. w_format,a_format,method")
    law.add_argument("--capacity-groups", default=None, metavar="MODE",
                     help="unified: one capacity curve per compression type and training method "
                          "('kind+method', the default when the table has a method column) or "
                          "per 'kind' (default otherwise), 'single', 'method', 'part', "
                          "'kind+part'; merge kinds with KIND=GROUP,... after an optional mode "
                          "(kind+method,sparse+scalar=scalar)")
    law.add_argument("--curve", default=None, choices=["tanh", "logistic", "logistic10"],
                     help="unified: form of the capacity curve ρ(GMSE): tanh (default), "
                          "logistic (1+B·GMSE^A)^-1, logistic10 (1-GMSE^A)/(1+B·GMSE^A)")
    law.add_argument("--compare-curves", action="store_true",
                     help="unified: also fit every curve form and the decoupled law, and print "
                          "their errors side by side")
    law.add_argument("--pool-formats", action="store_true",
                     help="chinchilla: fit one curve through runs of several formats on purpose")
    law.add_argument("--split-composed", action="store_true",
                     help="unified: multiply the capacities of the parts of a composed spec "
                          "(sparse0.5+int4 -> sparse0.5 x int4) instead of using its joint GMSE")
    law.add_argument("--fix-L", type=POSITIVE, default=None, metavar="L",
                     help="unified: fix the capacity ceiling L (needed without dense runs); "
                          "the same as --fix L=VALUE")
    law.add_argument("--fix", action="append", metavar="NAME=VALUE,...",
                     help="hold parameters at given values, e.g. --fix E=1.7,alpha=0.3 or "
                          "--fix F=0.41,C=1.39. On dense runs only with --law unified, "
                          "--fix F=0.41±0.02,C=1.39±0.08[,L=1] transfers that published curve "
                          "to them, its uncertainty carried through")
    chk = p.add_argument_group("checks")
    chk.add_argument("--independence", action="store_true",
                     help="also fit each format's multiplier per tokens-per-parameter ratio and "
                          "report whether they agree")
    chk.add_argument("--composability", action="store_true",
                     help="also compare two-axis multipliers with the product of their marginals")
    chk.add_argument("--assume-symmetric", action="store_true",
                     help="composability: take a missing activation marginal from the weight one")
    p.add_argument("--json", action="store_true", help="print the fit JSON instead of the summary")


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    # A fit's BLAS calls are tiny and run on one thread (single_threaded_blas); with more,
    # OpenBLAS's idle workers spin for about a tenth of a second after they start and again
    # after each limit is lifted (0.15 s of CPU per command). Before numpy loads OpenBLAS.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import numpy as np

    from capscale.laws import checks, fit_law, load_runs

    df = load_runs(args.table, mapping=args.map, derive=args.derive, drop_bad=args.drop_bad,
                   where=args.where)
    report = df.attrs.get("report", {})
    if report.get("dropped"):
        from capscale.laws.table import TableReport

        print(f"note: {TableReport(**report).describe()}")
    options = {}
    if args.eff_key:
        options["key_columns"] = [c.strip() for c in args.eff_key.split(",") if c.strip()]
    if args.capacity_groups:
        options["capacity_groups"] = args.capacity_groups
    if args.split_composed:
        options["split_composed"] = True
    if args.fix_L is not None:
        options["fix_L"] = args.fix_L
    if args.curve:
        options["curve"] = args.curve
    if args.pool_formats:
        options["pool_formats"] = True
    transfer = _transfer_curve(df, args)
    if transfer is not None:
        from capscale.laws.transfer import transfer_fit

        fit = transfer_fit(df, transfer, n_bootstrap=args.bootstrap, seed=args.seed,
                           source="--fix " + ",".join(args.fix), delta=args.delta,
                           space=args.space, level=args.level, n_jobs=args.jobs,
                           prune=not args.no_prune, heldout=not args.no_heldout, progress=True)
        options = {}
    else:
        if args.fix:
            options["fix"] = args.fix
        fit = fit_law(df, args.law, delta=args.delta, space=args.space,
                      n_bootstrap=args.bootstrap, level=args.level, seed=args.seed,
                      n_jobs=args.jobs, prune=not args.no_prune, max_starts=args.max_starts,
                      heldout=not args.no_heldout, progress=True, **options)
    text = fit.to_json(args.output) if args.output or args.json else None
    print(text if args.json else fit.summary())
    if args.output:
        print(f"wrote {args.output}")
    if args.plot:
        from capscale.laws.plots import plot_fit

        for path in plot_fit(fit, df, args.plot):
            print(f"wrote {path}")
    if args.compare_curves:
        from capscale.laws.curves import compare_curves

        curve_opts = {k: v for k, v in options.items() if k != "curve"}
        table = compare_curves(df, delta=args.delta, space=args.space, n_bootstrap=0,
                               seed=args.seed, heldout=not args.no_heldout, **curve_opts)
        print("\ncapacity-curve forms (unified law) against the decoupled law:")
        print(table.drop(columns=["formula"]).to_string(index=False,
                                                        float_format=lambda v: f"{v:.4g}"))
    if args.independence:
        kc = options.get("key_columns")
        reuse = fit if fit.law.name == "decoupled" and fit.samples is not None else None
        table = checks.data_independence(df, fit=reuse, key_columns=kc,
                                         n_bootstrap=min(args.bootstrap, 300) or 300,
                                         level=args.level, seed=args.seed, n_jobs=args.jobs)
        print("\ndata independence (multiplier per tokens-per-parameter ratio):")
        print(table.drop(columns=["n_ratios"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.composability:
        table = checks.composability(fit, assume_symmetric=args.assume_symmetric)
        print("\ncomposability (fitted multiplier vs product of marginals):")
        known = table[np.isfinite(table["product"])]
        if known.empty:
            print("no two-axis format has both marginals (runs with the other axis uncompressed)"
                  + ("" if args.assume_symmetric else "; try --assume-symmetric"))
        else:
            print(known.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
            print(f"mean absolute error: {table.attrs['mean_abs_error']:.4g}")
            missing = table[~np.isfinite(table["product"])]["format"].tolist()
            if missing:
                print(f"without both marginals: {', '.join(missing)}")
            if args.plot:
                from capscale.laws.plots import plot_composability

                print(f"wrote {plot_composability(table, Path(args.plot) / 'composability.png')}")
    return 0


def _transfer_curve(df, args):
    """The curve to transfer when the table has dense runs only, the law is unified and
    --fix names the curve (F and C); None otherwise."""
    if not args.fix or args.law != "unified":
        return None
    from capscale.errors import CapscaleError
    from capscale.laws import representation as rep
    from capscale.laws.fixed import parse_fix

    try:
        dense_only = bool(rep.dense_rows(df).all())
    except CapscaleError:  # no format columns at all: dense runs
        dense_only = True
    if not dense_only:
        return None
    curve = parse_fix(args.fix)
    if args.fix_L is not None:
        curve.setdefault("L", (args.fix_L, 0.0))
    return curve
