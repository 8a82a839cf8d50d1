"""capscale formats: the families of formats and how to name them."""

from __future__ import annotations

HELP = "list the format families, their spec syntax and examples"

GRAMMAR = """\
Spec grammar: parts joined by '+', applied left to right (sparsity and outliers first, then one
quantizer); each part is a base name with ':'-separated modifiers. 'none' is uncompressed (bf16).
Scale modifiers of scalar grids: rms (default: outermost level at the Gaussian-MSE-optimal α*·RMS),
absmax, mse (searched clip); granularity: row (default: the last dimension), tensor, gG (groups of G).
':had' on the last part rotates the whole pipeline in Hadamard blocks of 128 (':had64' for 64).
Bits per value are honest: codes, scales (fp16 per row/group, fp32 per tensor), masks and indices."""


def add_arguments(p) -> None:
    p.add_argument("--check", metavar="SPEC", nargs="+",
                   help="parse specs and print their canonical form, kind and bits per value")


def run(args) -> int:
    from capscale.formats import FAMILIES, parse_format

    if args.check:
        for s in args.check:
            f = parse_format(s)
            print(f"{s:<28} -> {f.spec:<28} kind={f.kind:<16} bits/value={f.bits_per_value:.4f}")
        return 0
    print(GRAMMAR + "\n")
    for fam in FAMILIES:
        print(f"{fam.name}")
        print(f"  {fam.about}")
        print(f"  e.g. {', '.join(fam.examples)}")
    from capscale.formats import registered

    for name, plugin in registered().items():
        print(f"user format {name} (from {plugin.origin}, source {plugin.source_hash})")
        print(f"  kind={plugin.part.kind}, bits/value={parse_format(name).bits_per_value:.4f}")
    return 0
