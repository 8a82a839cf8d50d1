"""Learned-scale baselines against trust estimation, and the OLMo2-style block, on a CPU.

Trains the same model (same N, same D, same data order per seed) with int-b weights and
activations under four gradient rules — plain STE, QuEST's trust estimation, LSQ and PACT —
at 2, 3 and 4 bits, and prints a table of final validation losses (mean ± sd over seeds).
Then the dense loss of the Llama block and the OLMo2-style block at two tiny sizes, at the
ladder's learning rate with the same seeds, and for one seed at higher learning rates. Runs are
``capscale train`` subprocesses (``--workers`` at a time, one thread each) into folders under
``--root``; re-running resumes or skips what is done.

    python benchmarks/exp_learned_scale.py --root /tmp/capscale-learned --workers 2
    python benchmarks/exp_learned_scale.py --part lr     # only the learning-rate runs
"""

from __future__ import annotations

import argparse

from experiments import Config, add_arguments, losses, mean_sd, run_all, unigram_entropy

BITS = (2, 3, 4)
RULES = ("ste", "trust", "lsq", "lsq+", "pact")
SIZES = ("30k", "100k")
ARCHS = ("llama", "olmo2")
LRS = (1e-2, 3e-2)  # beside the ladder's 3e-3


def configs(seeds: tuple[int, ...]) -> dict[str, list[Config]]:
    rules = [Config(f"int{b} W+A {r}", f"int{b}", f"int{b}", r, seeds) for b in BITS for r in RULES]
    archs = [Config(f"dense {arch} {size}", seeds=seeds, flags=("--arch", arch, "--size", size))
             for size in SIZES for arch in ARCHS]
    lrs = [Config(f"dense {arch} {size} lr{lr:g}", flags=("--arch", arch, "--size", size, "--lr", str(lr)))
           for size in SIZES for arch in ARCHS for lr in LRS]
    return {"rules": rules, "archs": archs, "lr": lrs}


def rules_table(args, rules: list[Config]) -> str:
    lines = ["| bits (W+A) | " + " | ".join(RULES) + " |", "|---|" + "---|" * len(RULES)]
    for b in BITS:
        cells = []
        for r in RULES:
            values, _ = losses(args, next(c for c in rules if c.label == f"int{b} W+A {r}"))
            cells.append(f"{mean_sd(values)} (n={len(values)})" if values else "—")
        lines.append(f"| int{b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def arch_table(args, archs: list[Config], lrs: list[Config]) -> str:
    lines = ["| size | block | N | LR 3e-3 (ladder) | " + " | ".join(f"LR {lr:g}" for lr in LRS) + " |",
             "|---|---|---|---|" + "---|" * len(LRS)]
    for size in SIZES:
        for arch in ARCHS:
            values, result = losses(args, next(c for c in archs if c.label == f"dense {arch} {size}"))
            row = [size, arch, f"{result['N']:,}" if result else "—",
                   f"{mean_sd(values)} (n={len(values)})" if values else "—"]
            for lr in LRS:
                v, _ = losses(args, next(c for c in lrs if c.label == f"dense {arch} {size} lr{lr:g}"))
                row.append(f"{v[0]:.4f}" if v else "—")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, root="/tmp/capscale-learned", size="30k", tokens=2_000_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--part", choices=("all", "rules", "archs", "lr"), default="all",
                   help="which runs to launch (the tables always show everything finished)")
    args = p.parse_args()
    parts = configs(tuple(range(args.seeds)))
    if not args.table_only:
        run_all(args, [c for name, cs in parts.items() if args.part in ("all", name) for c in cs])
    print(f"unigram cross-entropy of the validation split: {unigram_entropy(args.data, args.tokenizer):.4f}")
    print(rules_table(args, parts["rules"]))
    print()
    print(arch_table(args, parts["archs"], parts["lr"]))


if __name__ == "__main__":
    main()
