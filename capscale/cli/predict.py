"""`capscale predict FIT --n N --d D --format SPEC`: loss, dense-equivalent size, and the
compute-optimal allocation under a fitted law."""

from __future__ import annotations

import argparse
import json

from capscale.cli.args import FRACTION, POSITIVE, number

HELP = "predict loss (with interval), dense-equivalent N and compute-optimal N, D from a fit"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fit", help="fit JSON written by `capscale fit -o`, or builtin:NAME "
                               "(quest-unified, quest-decoupled, chinchilla-epoch, unified-paper)")
    p.add_argument("--n", type=POSITIVE, nargs="+", metavar="N", help="model size(s) (parameters)")
    p.add_argument("--d", type=POSITIVE, nargs="+", metavar="D", help="training tokens")
    p.add_argument("--format", help="format spec (on a weights/activations fit: both operands)")
    p.add_argument("--w", dest="w_format", help="weight format spec")
    p.add_argument("--a", dest="a_format", help="activation format spec")
    p.add_argument("--gmse", type=number(0), help="GMSE of the format (unified fits; else from its "
                                              "spec); alone, it stands for a format of that GMSE")
    p.add_argument("--kind", help="compression type of a format given by --gmse alone, when the "
                                  "fit has several capacity curves")
    p.add_argument("--sparsity", type=number(0, 1, hi_open=True), help="sparsity S (sparsity-law fits)")
    p.add_argument("--compute", type=POSITIVE, nargs="+", metavar="C",
                   help="FLOP budget(s): report the compute-optimal N and D")
    p.add_argument("--flops-per-param-token", type=POSITIVE, default=6.0,
                   help="FLOPs per parameter and token for --compute (default 6)")
    p.add_argument("--level", type=FRACTION, default=None, help="interval level (default: the fit's)")
    p.add_argument("--json", action="store_true", help="print JSON records")


def show_warnings(warnings, *, json_mode: bool = False) -> None:
    """Print a table's warnings (extrapolation beyond the fitted runs, ...) as `predict` and
    `compare` do: after the table, or on stderr beside JSON output."""
    import sys

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr if json_mode else sys.stdout)


def run(args: argparse.Namespace) -> int:
    from capscale.errors import CapscaleError
    from capscale.laws import compute_optimal, predict
    from capscale.laws.builtin_fits import load_fit

    fit = load_fit(args.fit)
    if not args.n and not args.compute:
        raise CapscaleError("give --n and --d to predict a loss, and/or --compute for the optimal N and D")
    if bool(args.n) != bool(args.d):
        raise CapscaleError("give both --n and --d")
    rep = {"format": args.format, "w_format": args.w_format, "a_format": args.a_format}
    extra = {"gmse": args.gmse, "kind": args.kind}
    if args.sparsity is not None:
        extra["sparsity"] = args.sparsity
    records = {}
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    if args.n:
        table = predict(fit, args.n, args.d, level=args.level, **rep, **extra)
        records["predictions"] = table.to_dict(orient="records")
        records["warnings"] = list(table.attrs.get("warnings", []))
        if not args.json:
            print(f"{fit.law.name} fit: predicted loss")
            shown = table if table["extrapolation"].any() else table.drop(columns=["extrapolation"])
            print(shown.to_string(index=False, float_format=fmt))
            show_warnings(table.attrs.get("warnings", []))
    if args.compute:
        table = compute_optimal(fit, args.compute, flops_per_param_token=args.flops_per_param_token,
                                level=args.level, **rep, **extra)
        records["compute_optimal"] = table.to_dict(orient="records")
        records["warnings"] = records.get("warnings", []) + table.attrs.get("warnings", [])
        if not args.json:
            print(f"\ncompute-optimal allocation (C = {args.flops_per_param_token:g}·N·D)")
            print(table.to_string(index=False, float_format=fmt))
            show_warnings(table.attrs.get("warnings", []))
    if args.json:
        print(json.dumps(records, indent=2, default=float))
    return 0
