"""Learned-scale baselines against trust estimation, and the OLMo2-style block, on a CPU.

Trains the same model (same N, same D, same data order per seed) with int-b weights and
activations under four gradient rules — plain STE, QuEST's trust estimation, LSQ and PACT —
at 2, 3 and 4 bits, and prints a table of final validation losses (mean ± sd over seeds).
Then the dense loss of the Llama block and the OLMo2-style block at two tiny sizes. Runs are
``capscale train`` subprocesses (``--workers`` at a time, one thread each) into folders under
``--root``; re-running resumes or skips what is done.

    python benchmarks/exp_learned_scale.py --root /tmp/capscale-learned --workers 2
"""

from __future__ import annotations

import argparse

from experiments import Config, add_arguments, losses, mean_sd, run_all, unigram_entropy

BITS = (2, 3, 4)
RULES = ("ste", "trust", "lsq", "pact")
SIZES = ("30k", "100k")


def configs(seeds: tuple[int, ...]) -> tuple[list[Config], list[Config]]:
    rules = [Config(f"int{b} W+A {r}", f"int{b}", f"int{b}", r, seeds) for b in BITS for r in RULES]
    archs = [Config(f"dense {arch} {size}", seeds=seeds, flags=("--arch", arch, "--size", size))
             for size in SIZES for arch in ("llama", "olmo2")]
    return rules, archs


def rules_table(args, rules: list[Config]) -> str:
    lines = ["| bits (W+A) | " + " | ".join(RULES) + " |", "|---|" + "---|" * len(RULES)]
    for b in BITS:
        cells = []
        for r in RULES:
            values, _ = losses(args, next(c for c in rules if c.label == f"int{b} W+A {r}"))
            cells.append(f"{mean_sd(values)} (n={len(values)})" if values else "—")
        lines.append(f"| int{b} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def arch_table(args, archs: list[Config]) -> str:
    lines = ["| size | N (llama) | llama | N (olmo2) | olmo2 |", "|---|---|---|---|---|"]
    for size in SIZES:
        row = [size]
        for arch in ("llama", "olmo2"):
            values, result = losses(args, next(c for c in archs if c.label == f"dense {arch} {size}"))
            row += [f"{result['N']:,}" if result else "—",
                    f"{mean_sd(values)} (n={len(values)})" if values else "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, root="/tmp/capscale-learned", size="30k", tokens=2_000_000)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    rules, archs = configs(tuple(range(args.seeds)))
    if not args.table_only:
        run_all(args, rules + archs)
    print(f"unigram cross-entropy of the validation split: {unigram_entropy(args.data, args.tokenizer):.4f}")
    print(rules_table(args, rules))
    print()
    print(arch_table(args, archs))


if __name__ == "__main__":
    main()
