"""What a sweep will cost before it runs: training FLOPs per run and accelerator hours.

FLOPs per run are 6·(N + V·d)·D + 6·L·T·d·D (:meth:`PlannedRun.flops`): the six FLOPs per
parameter and token of a forward and backward pass over the block linears and the LM head,
and the attention scores and values of a causal model (Kaplan et al. 2020, arXiv 2001.08361).
Hours are FLOPs / (MFU · peak): the peak is the accelerator's dense BF16 throughput from its
data sheet and the MFU is an assumption (small models and fake-quantization kernels run well
below large-model MFU), so the hours are an estimate to plan with, not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from capscale.data.tokenizers import known_vocab_size
from capscale.sweep.spec import SweepSpec

# dense BF16 tensor-core peaks (no sparsity), from the vendors' data sheets, in FLOP/s
PEAK_FLOPS = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "b200": 2250e12}
DEFAULT_MFU = 0.3
DEFAULT_ACCELERATOR = "h100"
ASSUMED_VOCAB = 32000  # planned with when the tokenizer's size is not known before loading it


def vocab_size_of(tokenizer: str, given: int | None = None) -> tuple[int, str]:
    """The tokenizer's vocabulary size and where the number comes from."""
    if given:
        return given, "[cost] vocab_size"
    known = known_vocab_size(tokenizer)
    if known is not None:
        kind = "tokenizer spec" if tokenizer.strip().startswith("train:") else "tokenizer"
        return known, f"the {kind} {tokenizer}"
    return ASSUMED_VOCAB, f"assumed for {tokenizer} (set [cost] vocab_size)"


@dataclass
class CostEstimate:
    flops: list[float]
    total_flops: float
    vocab_size: int
    vocab_source: str
    accelerator: str
    peak_flops: float
    mfu: float

    @property
    def accelerator_hours(self) -> float:
        return self.total_flops / (self.mfu * self.peak_flops) / 3600.0

    def hours_of(self, i: int) -> float:
        return self.flops[i] / (self.mfu * self.peak_flops) / 3600.0

    def describe(self) -> str:
        return (f"{self.total_flops:.3g} training FLOPs (6·(N + V·d)·D + 6·L·T·d·D, V = "
                f"{self.vocab_size:,} from {self.vocab_source}) = {self.accelerator_hours:,.1f} "
                f"{self.accelerator.upper()}-hours at {self.mfu:.0%} MFU of "
                f"{self.peak_flops / 1e12:,.0f} TFLOP/s (dense BF16 peak)")


# Seconds per optimizer step of one run on one CPU core, as a + b·(training FLOPs per step):
# the least-squares line through the dense step times of the CPU ladder's five widths on a
# quiet machine (14-56 ms, BENCHMARKS.md "The CPU ladder"); compressed runs (fake quantization
# of weights and activations, trust masks) take COMPRESSED_SLOWDOWN times longer (60 against
# 30 ms at width 48, 107 against 56 at width 96, INT4).
CPU_STEP_SECONDS = (0.0137, 1.0 / 4.38e10)
COMPRESSED_SLOWDOWN = 2.0
# A sweep whose longest run takes less than this on one core is CPU-sized: a SLURM request
# for it asks for no GPU.
CPU_SIZED_HOURS = 1.0


def cpu_seconds_of(run, vocab_size: int) -> float:
    """One run's estimated time on one quiet CPU core."""
    from capscale.runrecord import is_dense_run

    a, b = CPU_STEP_SECONDS
    steps = max(run.steps, 1)
    per_step = a + b * run.flops(vocab_size) / steps
    dense = is_dense_run(run.config.w_format, run.config.a_format)
    return steps * per_step * (1.0 if dense else COMPRESSED_SLOWDOWN)


def cpu_sized(spec: SweepSpec) -> bool:
    """Whether every run of the spec would take under CPU_SIZED_HOURS on one CPU core."""
    return all(cpu_seconds_of(r, vocab_size_of(r.config.tokenizer)[0]) < CPU_SIZED_HOURS * 3600
               for r in spec.runs)


def estimate(spec: SweepSpec, mfu: float | None = None, accelerator: str | None = None) -> CostEstimate:
    c = spec.cost
    accel = (accelerator or c.get("accelerator") or DEFAULT_ACCELERATOR).lower()
    peak = c.get("peak_tflops", 0) * 1e12 or PEAK_FLOPS.get(accel, PEAK_FLOPS[DEFAULT_ACCELERATOR])
    tokenizers = {r.config.tokenizer for r in spec.runs}
    vocab, source = vocab_size_of(sorted(tokenizers)[0], c.get("vocab_size"))
    flops = [r.flops(vocab_size_of(r.config.tokenizer, c.get("vocab_size"))[0]) for r in spec.runs]
    return CostEstimate(flops=flops, total_flops=float(sum(flops)), vocab_size=vocab,
                        vocab_source=source, accelerator=accel, peak_flops=peak,
                        mfu=mfu or c.get("mfu", DEFAULT_MFU))
