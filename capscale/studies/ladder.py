"""The model ladders a study trains on, at two scales, and the sweep spec they expand to.

Every study measures ρ against its own dense runs, so each has the same skeleton: a dense
ladder (several sizes of one shape family, each at token budgets spanning 4×, so that the
decoupled law can tell A·N^(−α) from B·D^(−β)) plus the compressed runs at fewer sizes and one
budget. ``cpu`` is the ladder measured on this project's 2-core machines (BENCHMARKS.md, "The
CPU ladder"); ``paper`` is the unified paper's (arXiv 2506.01863, Table 2: 30M-200M on C4 with
the Llama-2 tokenizer at 100 tokens per parameter, as in ``examples/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capscale.errors import CapscaleError

SCALES = ("cpu", "paper")


@dataclass(frozen=True)
class Ladder:
    scale: str
    dense_sizes: tuple[str, ...]
    dense_lengths: tuple[dict, ...]  # one run per size and length: {"tokens": ...} or tpp
    compressed_sizes: tuple[str, ...]
    compressed_length: dict
    train: dict
    launcher: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    about: str = ""
    sizes: dict = field(default_factory=dict)  # shapes beyond the named presets ([sizes])
    # seeds of the runs at the compressed budget: a run's final loss scatters by seed (about
    # 0.02-0.03 nats at CPU scale), and ρ is read off those runs alone
    dense_seeds: tuple[int, ...] = (0,)
    compressed_seeds: tuple[int, ...] = (0,)

    def describe(self) -> str:
        """``about``, with the seeds at the compressed budget (a study sets its own)."""
        n = len(self.compressed_seeds)
        return f"{self.about}; {n} seed{'s' if n > 1 else ''} at the compressed budget"


# One shape family: 2 blocks, head dimension 8, widths 16-48 (N 6.7k-60k non-embedding), all at
# learning rate 4e-3 (capscale.model.presets); dense runs at token budgets 256k-1M (1,024 tokens,
# 8 sequences of 128, per step: 256-1,024 optimizer steps, at most 0.7 epochs of the embedded
# corpus's 1.50M training tokens with train:spm:512). At the largest budget every model sees
# at least 17 tokens per parameter: the loss falls 0.22-0.26 nats per e-fold of N there, with
# no data-limited bend (the wider ladder of head dimension 16 flattened to 0.09 beyond width
# 48). The compressed runs sit at that budget at widths 24-40, and ρ is read off the dense
# curve there (capscale.laws.budget_fit). A single run's final loss scatters by 0.02-0.03
# nats by seed, so one run places log ρ only to about ±0.12: the runs at that budget take two
# seeds (BENCHMARKS.md, "The data-rich CPU ladder").
CPU = Ladder(
    scale="cpu",
    dense_sizes=("cpu-w16", "cpu-w24", "cpu-w32", "cpu-w40", "cpu-w48"),
    dense_lengths=({"tokens": 262144}, {"tokens": 524288}, {"tokens": 1048576}),
    compressed_sizes=("cpu-w24", "cpu-w32", "cpu-w40"),
    compressed_length={"tokens": 1048576},
    train={"data": "builtin:wiki", "tokenizer": "train:spm:512", "seq_len": 128,
           "batch_tokens": 1024, "val_tokens": 65536, "eval_every": 1000000},
    launcher={"jobs": 2, "threads": 1},
    about="2-block Llama models of width 16-48 (7k-60k parameters) on the embedded "
          "Wikipedia corpus, 256k-1M tokens; compressed runs at 1M tokens, widths 24-40",
    dense_seeds=(0, 1),
    compressed_seeds=(0, 1),
)

PAPER = Ladder(
    scale="paper",
    dense_sizes=("30M", "50M", "100M", "200M"),
    dense_lengths=({"tokens_per_param": 25}, {"tokens_per_param": 50},
                   {"tokens_per_param": 100}),
    compressed_sizes=("30M", "50M", "100M", "200M"),
    compressed_length={"tokens_per_param": 100},
    train={"data": "c4", "tokenizer": "hf:meta-llama/Llama-2-7b-hf", "seq_len": 512,
           "batch_tokens": 262144},
    launcher={"kind": "slurm", "gpus_per_run": 1},
    cost={"accelerator": "h100", "mfu": 0.3},
    about="the unified paper's ladder (30M-200M) on C4 with the Llama-2 tokenizer, compressed "
          "runs at 100 tokens per parameter, dense also at 25 and 50",
)

LADDERS = {"cpu": CPU, "paper": PAPER}


def scale_ladder(scale: str) -> Ladder:
    if scale not in LADDERS:
        raise CapscaleError(f"scale {scale!r}: use one of {', '.join(SCALES)}")
    return LADDERS[scale]


def spec_dict(name: str, lad: Ladder, points: list[dict], train: dict | None = None) -> dict:
    """A sweep spec (the dict of its TOML) with the dense ladder and one run per compressed
    point (a dict of w_format, a_format and any per-run training settings) at every
    compressed size and seed. ``train`` adds settings shared by the whole study (e.g. the gradient
    rule)."""
    runs = [{"size": s, **length, "w_format": "none", "a_format": "none", "seed": seed}
            for s in lad.dense_sizes for length in lad.dense_lengths
            for seed in (lad.dense_seeds if length == lad.compressed_length else (0,))]
    for p in points:
        for s in lad.compressed_sizes:
            for seed in lad.compressed_seeds:
                runs.append({"size": s, **lad.compressed_length, "seed": seed, **p})
    d = {"name": name, "train": {**lad.train, **(train or {})}, "runs": runs}
    if lad.sizes:
        d["sizes"] = {k: dict(v) for k, v in lad.sizes.items()}
    if lad.launcher:
        d["launcher"] = dict(lad.launcher)
    if lad.cost:
        d["cost"] = dict(lad.cost)
    return d
