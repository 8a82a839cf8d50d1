"""`capscale compare FIT [SPEC...]`: rank formats by capacity, per bit and per bit-op."""

from __future__ import annotations

import argparse

from capscale.cli.args import FRACTION, POSITIVE
from capscale.cli.predict import show_warnings

HELP = ("rank formats by capacity, effective parameters per bit (iso-memory) and per bit "
        "operation, with the Pareto front; untrained formats via their GMSE (unified fits)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("fit", help="fit JSON written by `capscale fit -o`, or builtin:NAME "
                               "(quest-unified, quest-decoupled, unified-paper)")
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help="formats to compare; W/A (e.g. int4:had/none) names both operands. "
                        "Default: a standard panel (unified fits) or the fitted formats")
    p.add_argument("--operands", choices=["both", "weights"], default="both",
                   help="on weights/activations fits, apply a plain SPEC to both operands "
                        "(default) or to the weights only")
    g = p.add_argument_group("paired comparison (differences with paired bootstrap intervals)")
    g.add_argument("--n", type=POSITIVE, metavar="N", help="model size: compare the formats at N, D")
    g.add_argument("--d", type=POSITIVE, metavar="D", help="training tokens")
    g.add_argument("--memory", metavar="SIZE", help="also at equal memory: the N each format fits "
                                                    "in SIZE of weights (e.g. 4GB), at D")
    g.add_argument("--equal-compute", action="store_true",
                   help="also at equal compute: the N each format affords at the bit-op cost of "
                        "a dense N-parameter model (linear and quadratic counting)")
    g.add_argument("--level", type=FRACTION, default=None, help="interval level (default: the fit's)")
    p.add_argument("--plot", metavar="FILE", help="write the comparison plot (png, pdf, svg)")
    p.add_argument("--csv", metavar="FILE", help="write the table as CSV")
    p.add_argument("--json", action="store_true", help="print JSON records")


def run(args: argparse.Namespace) -> int:
    import json

    from capscale.io import write_table
    from capscale.laws import compare_formats
    from capscale.laws.builtin_fits import load_fit

    fit = load_fit(args.fit)
    if args.n is not None or args.d is not None or args.memory or args.equal_compute:
        return _paired(fit, args)
    table = compare_formats(fit, args.specs or None, operands=args.operands)
    warnings = table.attrs.get("warnings", [])
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), indent=2, default=float))
        show_warnings(warnings, json_mode=True)
    else:
        cols = [c for c in ("format", "rho", "rho_lo", "rho_hi", "trained", "gmse", "bits_weights",
                            "bits_activations", "iso_memory_gain", "rho_per_compute_linear",
                            "rho_per_compute_quadratic", "pareto_bits") if c in table]
        print(f"{fit.law.name} fit: rho is the {table['source'].iloc[0]}")
        print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print("iso_memory_gain = rho·16/bits (effective parameters per bit, relative to bf16); "
              "rho_per_compute_* = rho / bit-op cost relative to bf16 (linear: max(b_w, b_a)/16, "
              "quadratic: b_w·b_a/256)")
        show_warnings(warnings)
    if args.csv:
        print(f"wrote {write_table(table, args.csv)}")
    if args.plot:
        from capscale.laws.plots import plot_compare

        print(f"wrote {plot_compare(table, args.plot)}")
    return 0


def _paired(fit, args: argparse.Namespace) -> int:
    import json

    from capscale.errors import CapscaleError
    from capscale.laws.paired import paired_compare

    if args.n is None or args.d is None:
        raise CapscaleError("a paired comparison needs --n and --d (the model size and tokens)")
    if len(args.specs) < 2:
        raise CapscaleError("name two or more formats to compare, e.g. nvfp4 mxfp4 int4")
    res = paired_compare(fit, args.specs, N=args.n, D=args.d, memory=args.memory,
                         equal_compute=args.equal_compute, operands=args.operands,
                         level=args.level)
    warnings = res["formats"].attrs.get("warnings", [])
    if args.json:
        print(json.dumps({**{k: v.to_dict(orient="records") for k, v in res.items()},
                          "warnings": warnings}, indent=2, default=float))
        return 0
    level = args.level or fit.info["settings"]["interval_level"]
    pct = f"{level:.0%}"
    f4 = lambda v: f"{v:.4g}"  # noqa: E731
    src = (fit.info.get("provenance") or {}).get("builtin") or args.fit
    print(f"{fit.law.name} fit ({src}): paired comparison, {pct} intervals from "
          f"{len(fit.samples)} bootstrap resamples, the same resample for every format")
    for scen, fm in res["formats"].groupby("scenario", sort=False):
        print(f"\n{scen}: D = {args.d:.3g}")
        cols = ["format", "N", "bits_weights", "loss", "loss_lo", "loss_hi", "rho", "rho_lo",
                "rho_hi", "N_eff"]
        if fm["loss"].isna().all():
            cols = [c for c in cols if not c.startswith("loss")]
        print(fm[cols].to_string(index=False, float_format=f4))
        pr = res["pairs"][res["pairs"]["scenario"] == scen]
        for r in pr.itertuples():
            if r.decided_by == "loss":
                diff = f"loss A-B {r.d_loss:+.4f} [{r.d_loss_lo:+.4f}, {r.d_loss_hi:+.4f}]"
            else:
                diff = "loss not given by this fit; compared on N·rho"
            print(f"  {r.A} vs {r.B}: {diff}, rho A-B {r.d_rho:+.4f} [{r.d_rho_lo:+.4f}, "
                  f"{r.d_rho_hi:+.4f}], P({r.A} better) = {r.p_A_better:.3f}  [{r.basis}]")
    show_warnings(warnings)
    return 0
