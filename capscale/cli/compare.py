"""`capscale compare FIT [SPEC...]`: rank formats by capacity, per bit and per bit-op."""

from __future__ import annotations

import argparse

HELP = ("rank formats by capacity, effective parameters per bit (iso-memory) and per bit "
        "operation, with the Pareto front; untrained formats via their GMSE (unified fits)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fit", help="fit JSON written by `capscale fit -o`")
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help="formats to compare; W/A (e.g. int4:had/none) names both operands. "
                        "Default: a standard panel (unified fits) or the fitted formats")
    p.add_argument("--operands", choices=["both", "weights"], default="both",
                   help="on weights/activations fits, apply a plain SPEC to both operands "
                        "(default) or to the weights only")
    p.add_argument("--plot", metavar="FILE", help="write the comparison plot (png, pdf, svg)")
    p.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    p.add_argument("--json", action="store_true", help="print JSON records")


def run(args: argparse.Namespace) -> int:
    import json

    from capscale.io import write_table
    from capscale.laws import FitResult, compare_formats

    fit = FitResult.load(args.fit)
    table = compare_formats(fit, args.specs or None, operands=args.operands)
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), indent=2, default=float))
    else:
        cols = [c for c in ("format", "rho", "rho_lo", "rho_hi", "trained", "gmse", "bits_weights",
                            "bits_activations", "iso_memory_gain", "rho_per_compute_linear",
                            "rho_per_compute_quadratic", "pareto_bits") if c in table]
        print(f"{fit.law.name} fit: rho is the {table['source'].iloc[0]}")
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print("iso_memory_gain = rho·16/bits (effective parameters per bit, relative to bf16); "
              "rho_per_compute_* = rho / bit-op cost relative to bf16 (linear: max(b_w, b_a)/16, "
              "quadratic: b_w·b_a/256)")
    if args.csv:
        print(f"wrote {write_table(table, args.csv)}")
    if args.plot:
        from capscale.laws.plots import plot_compare

        print(f"wrote {plot_compare(table, args.plot)}")
    return 0
