"""capscale gmse: the capacity probe on the command line."""

from __future__ import annotations

import argparse
import json
import sys

from capscale.cli.args import FRACTION, INTEGER

HELP = "GMSE of formats on Gaussian data, with lower bounds and the predicted capacity ρ"


def _shape(text: str) -> tuple[int, int]:
    """ROWSxCOLS, each a whole number >= 1 in the number grammar (512x4096, 512x4Ki)."""
    from capscale.numbers import NumberError, parse_number

    parts = text.lower().split("x")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"shape must look like 512x4096, got {text!r}")
    try:
        rows, cols = (parse_number(v, name="--shape", lo=1, integer=True) for v in parts)
    except NumberError as e:
        raise argparse.ArgumentTypeError(f"{e} (a shape looks like 512x4096)") from None
    return rows, cols


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("specs", nargs="*", metavar="SPEC",
                   help="format specs (e.g. int4 nf4 sparse0.5+int4); none: the standard panel of ~35 formats")
    p.add_argument("--shape", type=_shape, default=None, metavar="ROWSxCOLS",
                   help="shape of each Gaussian tensor (per-row/group scales and top-k depend on it); default 512x4096")
    p.add_argument("--rel-err", type=FRACTION, default=1e-3, help="target relative standard error of Monte Carlo (default 1e-3)")
    p.add_argument("--seed", type=INTEGER, default=0)
    p.add_argument("--mc", action="store_true", help="Monte Carlo even where the exact integral applies")
    p.add_argument("--tensor-amax", type=float, default=None, metavar="A",
                   help="NVFP4: GMSE at a static FP32 tensor scale A/2688 (A in units of σ, blocks above it "
                        "saturate; 4.5 gives the published 0.0090463) instead of each tensor's own scale "
                        "averaged over tensors of --shape")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    out.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("-o", "--out", metavar="FILE", help="also write the table (.csv, .parquet or .jsonl)")
    p.add_argument("--plot", metavar="FILE", help="draw GMSE against bits per value with both bounds (PNG/PDF/SVG)")


def format_table(table) -> str:
    """The table as text; `table` is a DataFrame of gmse_table or the records of gmse_records."""
    rows = table.to_dict(orient="records") if hasattr(table, "to_dict") else table
    lines = [f"{'spec':<24} {'bits':>6} {'GMSE':>12} {'± s.e.':>9} {'method':<11} "
             f"{'log¼ GMSE':>9} {'÷4^-b':>7} {'ρ':>6}"]
    for r in rows:
        se = "0" if r["method"] == "exact" else f"{r['gmse_se']:.1e}"
        bits = "—" if r["bits_per_value"] != r["bits_per_value"] else f"{r['bits_per_value']:.3f}"
        ratio = "—" if r["ratio_to_shannon"] != r["ratio_to_shannon"] else f"{r['ratio_to_shannon']:.2f}"
        lines.append(f"{r['spec']:<24} {bits:>6} {r['gmse']:>12.6g} {se:>9} {r['method']:<11} "
                     f"{r['log_quarter_gmse']:>9.3f} {ratio:>7} {r['rho_unified']:>6.3f}")
    return "\n".join(lines)


def _native(value):
    """A record's value as DataFrame.to_dict gives it (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def nvfp4_note(shape: tuple[int, int], tensor_amax: float | None) -> str:
    """The convention behind the nvfp4 row: its FP32 tensor scale amax/2688 places the E4M3
    block scales, so its GMSE depends on the tensor maximum (periodically in log2 amax)."""
    if tensor_amax is not None:
        return (f"nvfp4: at a static FP32 tensor scale {tensor_amax:g}σ/2688 (blocks of 16 i.i.d. "
                "N(0, 1), those above it saturate); over a doubling of the scale it ranges 0.0090437-0.0090591.")
    return (f"nvfp4: expected over {shape[0]}x{shape[1]} Gaussian tensors, each with its own FP32 "
            "tensor scale amax/2688; --tensor-amax A fixes the scale (4.5: the published 0.0090463).")


def run(args) -> int:
    from capscale.capacity import DEFAULT_SHAPE, UNIFIED_LLAMA_C4_SOURCE
    from capscale.capacity.table import COLUMNS, STANDARD_PANEL, gmse_records
    from capscale.errors import CapscaleError
    from capscale.formats import parse_format

    specs = args.specs or list(STANDARD_PANEL)
    for s in specs:  # fail on a bad spec before any work
        parse_format(s)
    if not 0 < args.rel_err < 1:
        raise CapscaleError(f"--rel-err must be in (0, 1), got {args.rel_err}")
    if args.tensor_amax is not None and (args.mc or not args.tensor_amax > 0):
        raise CapscaleError("--tensor-amax takes a positive tensor maximum and the exact integral (not --mc)")
    shape = args.shape or DEFAULT_SHAPE
    records = gmse_records(specs, shape=shape, rel_err=args.rel_err, seed=args.seed,
                           exact=not args.mc, progress=sys.stderr.isatty(), tensor_amax=args.tensor_amax)
    df = None
    if args.csv or args.out or args.plot:  # pandas only when a table is written or drawn
        import pandas as pd

        df = pd.DataFrame(records, columns=COLUMNS)
    if args.json:
        print(json.dumps([{k: _native(v) for k, v in r.items()} for r in records], indent=2))
    elif args.csv:
        print(df.to_csv(index=False), end="")
    else:
        print(format_table(records))
        print(f"\nρ: capacity predicted from GMSE with {UNIFIED_LLAMA_C4_SOURCE}.")
        print("÷4^-b: GMSE over Shannon's rate–distortion bound at the same bits per value.")
        if any(parse_format(s).spec == "nvfp4" for s in specs):
            print(nvfp4_note(shape, args.tensor_amax))
    if args.out:
        from capscale.io import write_table

        write_table(df, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        from capscale.capacity.plot import plot_gmse

        plot_gmse(df, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
