"""`capscale probe SOURCE... --formats F...`: formats on real tensors beside Gaussian ones."""

from __future__ import annotations

import argparse

from capscale.cli.args import COUNT1, FRACTION, INTEGER

HELP = ("measure formats on real tensors (a safetensors file, a run folder or checkpoint, a "
        "Hugging Face folder; activations with --data) and synthetic heavy-tailed ones, "
        "against their GMSE")

DEFAULT_FORMATS = ("int4", "nvfp4", "mxfp4", "nf4", "int4:absmax:g128")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="a .safetensors file, a capscale run folder or checkpoint folder, a "
                        "Hugging Face model folder (its *.safetensors), or 'synthetic' (Gaussian, "
                        "Student-t 3 and 5, Laplace, Gaussian with 0.1%% outliers at ±20)")
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS), metavar="SPEC",
                   help=f"formats to measure (default: {' '.join(DEFAULT_FORMATS)})")
    p.add_argument("--data", metavar="SOURCE",
                   help="also capture the inputs of every linear layer of a run folder's model "
                        "on a few batches of this data source (as in training, e.g. builtin:wiki)")
    p.add_argument("--batches", type=COUNT1, default=4, help="batches for the activations (default 4)")
    p.add_argument("--batch-size", type=COUNT1, default=8, help="sequences per batch (default 8)")
    p.add_argument("--include-embeddings", action="store_true",
                   help="probe embeddings and LM head too (not compressed in training)")
    p.add_argument("--seed", type=INTEGER, default=0, help="seed of the Gaussian and synthetic tensors")
    p.add_argument("--rel-err", type=FRACTION, default=1e-3,
                   help="target relative standard error of the Monte Carlo GMSE (default 1e-3)")
    p.add_argument("-o", "--out", default="probe", metavar="DIR",
                   help="folder for tensors.csv, layer_types.csv, summary.csv and probe.png "
                        "(default ./probe)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace
    from pathlib import Path

    from capscale.errors import CapscaleError
    from capscale.formats import parse_format
    from capscale.io import atomic_write_json, write_table
    from capscale.probe import capture_activations, load_weights, probe, synthetic_tensors
    from capscale.probe.plot import plot_probe
    from capscale.probe.tensors import is_run_folder

    for spec in args.formats:  # a bad spec fails before any tensor is read
        parse_format(spec)
    if args.batches < 1 or args.batch_size < 1:
        raise CapscaleError("--batches and --batch-size must be positive")
    tensors = []
    for source in args.sources:
        if source == "synthetic":
            found = synthetic_tensors(seed=args.seed)
        else:
            found = load_weights(source, include_embeddings=args.include_embeddings)
            if args.data:
                if not is_run_folder(Path(source).expanduser()):
                    raise CapscaleError(f"--data captures activations of a capscale run folder; "
                                        f"{source} is not one")
                found += capture_activations(source, args.data, args.batches, args.batch_size)
        if len(args.sources) > 1:  # several models: name each tensor after its source
            found = [replace(t, name=f"{Path(source).name}/{t.name}") for t in found]
        tensors += found
    if not 0 < args.rel_err < 1:
        raise CapscaleError(f"--rel-err must be in (0, 1), got {args.rel_err}")
    result = probe(tensors, args.formats, seed=args.seed, gmse_rel_err=args.rel_err)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_table(result.tensors, out / "tensors.csv")
    write_table(result.layer_types, out / "layer_types.csv")
    write_table(result.summary, out / "summary.csv")
    atomic_write_json(out / "summary.json", {
        "sources": args.sources, "data": args.data,
        "summary": result.summary.to_dict(orient="records"),
        "disagreements": result.disagreements, "skipped": result.skipped})
    plot = plot_probe(result.tensors, str(out / "probe.png"),
                      title=f"formats on {', '.join(Path(s).name for s in args.sources)}")
    if args.json:
        print(json.dumps(result.summary.to_dict(orient="records"), indent=2, default=float))
        return 0
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    kinds = result.tensors.drop_duplicates("tensor")["kind"].value_counts().to_dict()
    print(f"{len(tensors)} tensors ({', '.join(f'{n} {k}' for k, n in kinds.items())}); "
          "relative MSE averaged over every value; gauss = a Gaussian tensor of the same shape")
    cols = ["format", "bits_per_value", "rel_mse", "eff_bits", "gauss_same_shape", "gmse",
            "ratio_to_gmse", "rank_real", "rank_gauss", "rank_gmse"]
    print(result.summary[cols].to_string(index=False, float_format=fmt))
    covered = int(result.summary["tensors"].iloc[0])
    if covered < len(tensors):
        print(f"(over the {covered} tensors every format can represent: {len(tensors) - covered} "
              "have a shape some format does not take, e.g. nf4's blocks of 64 on a 32-wide row; "
              "they are in tensors.csv)")
    if result.disagreements:
        print("\nwhere the real tensors rank the formats differently from Gaussian data:")
        for line in result.disagreements:
            print(f"  {line}")
    else:
        print("\nthe real tensors rank the formats as Gaussian data does")
    lt = result.layer_types.pivot_table(index=["layer_type"], columns="format", values="rel_mse",
                                        sort=False)
    tails = result.layer_types.groupby("layer_type", sort=False)[["kurtosis", "max_over_rms"]].first()
    print("\nrelative MSE per layer type (kurtosis 3 and max|x|/RMS ≈ 4-5 for Gaussian data):")
    print(lt.join(tails).to_string(float_format=fmt))
    for line in result.skipped[:5]:
        print(f"skipped: {line}")
    print(f"\nwrote {out}/tensors.csv, layer_types.csv, summary.csv, summary.json and {plot}")
    return 0
