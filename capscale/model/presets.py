"""Names the command line needs without importing torch: the model ladder and the
gradient-rule choices."""

from __future__ import annotations

from dataclasses import dataclass

from capscale.errors import CapscaleError

QUANT_RULES = ("ste", "trust", "clip", "lsq", "lsq+", "pact")
LEARNED_RULES = ("lsq", "lsq+", "pact")  # the rules that train a scale (capscale.model.learned_scale)
SPARSE_RULES = ("fw", "ste", "rms", "b-rms", "a-b-rms")
VECTOR_RULES = ("trust", "ste")
HADAMARD_MODES = ("full", "half")
# Block architectures: the papers' Llama block, and the OLMo2-style block the unified paper's
# NeurIPS version refits its law on (see capscale.model.llama).
ARCHS = ("llama", "olmo2")


@dataclass(frozen=True)
class SizePreset:
    """A named rung of the model ladder: shape plus the learning rate it was trained with."""

    n_layer: int
    n_embd: int
    n_head: int
    lr: float
    source: str


# The papers' ladder (unified paper Table 2; QuEST runs for 430M/800M, whose shapes and
# learning rates are in the run arguments of IST-DASLab/QuEST for_plots/runs_for_scaling.json).
# Tiny CPU rungs follow the same rules with head dimension 32 (64 from width 192 up). Their
# learning rate, 3e-3, is the best of {1e-3, 3e-3, 1e-2} in a sweep of the 100k rung on the
# embedded corpus (BENCHMARKS.md); 2M and 5M take 2e-3 following the ladder's trend (not swept).
SIZES: dict[str, SizePreset] = {
    "30k": SizePreset(2, 32, 1, 3e-3, "tiny CPU rung"),
    "100k": SizePreset(2, 64, 2, 3e-3, "tiny CPU rung"),
    "350k": SizePreset(3, 96, 3, 3e-3, "tiny CPU rung"),
    "1M": SizePreset(5, 128, 4, 3e-3, "tiny CPU rung"),
    "2M": SizePreset(4, 192, 3, 2e-3, "tiny CPU rung"),
    "5M": SizePreset(6, 256, 4, 2e-3, "tiny CPU rung"),
    # The CPU ladder of the studies and the demo: one shape family (2 blocks, head dimension
    # 16, widths 16-96), each rung's learning rate the best of a sweep at the budget where
    # the studies measure ρ, 1,048,576 tokens (BENCHMARKS.md, "The CPU ladder").
    "cpu-7k": SizePreset(2, 16, 1, 8e-3, "CPU ladder (LR swept)"),
    "cpu-27k": SizePreset(2, 32, 2, 8e-3, "CPU ladder (LR swept)"),
    "cpu-60k": SizePreset(2, 48, 3, 4e-3, "CPU ladder (LR swept)"),
    "cpu-107k": SizePreset(2, 64, 4, 4e-3, "CPU ladder (LR swept)"),
    "cpu-240k": SizePreset(2, 96, 6, 2e-3, "CPU ladder (LR swept)"),
    # The data-rich CPU ladder (head dimension 8, widths 16-48: at least 17 tokens per
    # parameter at 1,048,576 tokens), one learning rate, 4e-3: the largest below width 48's
    # cliff (8e-3 costs it 0.23 nats) and the one whose seeds spread least at width 32 (sd
    # 0.011 over three, against 0.024 at 8e-3 and 0.038 at 2e-3); 8e-3 is 0.05-0.09 nats
    # better at widths 16-40 (BENCHMARKS.md, "The data-rich CPU ladder").
    "cpu-w16": SizePreset(2, 16, 2, 4e-3, "data-rich CPU ladder"),
    "cpu-w24": SizePreset(2, 24, 3, 4e-3, "data-rich CPU ladder"),
    "cpu-w32": SizePreset(2, 32, 4, 4e-3, "data-rich CPU ladder"),
    "cpu-w40": SizePreset(2, 40, 5, 4e-3, "data-rich CPU ladder"),
    "cpu-w48": SizePreset(2, 48, 6, 4e-3, "data-rich CPU ladder"),
    "30M": SizePreset(6, 640, 5, 1.2e-3, "unified paper Table 2"),
    "50M": SizePreset(7, 768, 6, 1.2e-3, "unified paper Table 2"),
    "100M": SizePreset(8, 1024, 8, 6e-4, "unified paper Table 2"),
    "200M": SizePreset(10, 1280, 10, 3e-4, "unified paper Table 2"),
    "430M": SizePreset(13, 1664, 13, 1.5e-4, "QuEST runs"),
    "800M": SizePreset(16, 2048, 16, 7.5e-5, "QuEST runs"),
}


def size_preset(name: str) -> SizePreset:
    key = name.strip()
    for k, v in SIZES.items():
        if k.lower() == key.lower():
            return v
    raise CapscaleError(
        f"unknown model size {name!r}: use one of {', '.join(SIZES)} "
        "or give --n-layer, --n-embd and --n-head"
    )
