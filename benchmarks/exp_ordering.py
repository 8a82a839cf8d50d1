"""Does a tiny model on the embedded corpus reproduce the papers' ordering of formats?

Trains the same model (same N, same D, same seed set) over each representation with
``capscale train`` and prints the validation losses: dense ≈ int8 < int4 < int3 < int2 on
weights and activations, weight-only int4 better than int4 on both, sparse0.5 better than
sparse0.75, Hadamard with trust estimation better than plain STE at 2 and 3 bits. Runs are
subprocesses (``--workers`` at a time, one thread each) into run folders under ``--root``;
re-running the script resumes or skips what is done.

    python benchmarks/exp_ordering.py --root /tmp/capscale-ordering --workers 2
"""

from __future__ import annotations

import argparse

from experiments import Config, add_arguments, losses, mean_sd, run_all, unigram_entropy

CONFIGS = [
    Config("dense", "none", "none", "trust", (0, 1, 2)),
    Config("int8 W+A", "int8", "int8", "trust", (0, 1, 2)),
    Config("int4 W+A", "int4", "int4", "trust", (0, 1, 2)),
    Config("int4 W", "int4", "none", "trust", (0, 1, 2)),
    Config("int3 W+A", "int3", "int3"),
    Config("int2 W+A", "int2", "int2"),
    Config("sparse0.5 W", "sparse0.5", "none"),
    Config("sparse0.75 W", "sparse0.75", "none"),
    Config("int3:had W+A trust", "int3:had", "int3:had"),
    Config("int3 W+A STE", "int3", "int3", "ste"),
    Config("int2:had W+A trust", "int2:had", "int2:had"),
    Config("int2 W+A STE", "int2", "int2", "ste"),
]


def table(args) -> str:
    lines = ["| representation | weights | activations | gradient rules (w; a) | seeds | "
             "val loss (mean ± sd) | per seed |", "|---|---|---|---|---|---|---|"]
    for c in CONFIGS:
        values, result = losses(args, c)
        if not values:
            continue
        rules = f"{result.get('w_rules') or '—'}; {result.get('a_rules') or '—'}"
        lines.append(f"| {c.label} | {c.w} | {c.a} | {rules} | {len(values)} | {mean_sd(values)} | "
                     + ", ".join(f"{x:.4f}" for x in values) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, root="/tmp/capscale-ordering", size="100k", tokens=3_000_000)
    args = p.parse_args()
    if not args.table_only:
        run_all(args, CONFIGS)
    print(f"unigram cross-entropy of the validation split: {unigram_entropy(args.data, args.tokenizer):.4f}")
    print(table(args))


if __name__ == "__main__":
    main()
