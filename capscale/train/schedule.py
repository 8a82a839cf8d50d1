"""Learning-rate schedule of the papers' runs.

The QuEST / llm-baselines code behind both papers uses PyTorch's ``OneCycleLR`` with
``div_factor=100``, ``final_div_factor=0.1``, cosine annealing and ``pct_start`` = warm-up
steps / total steps: the learning rate rises from LR/100 to LR over the warm-up (10% of the
steps, peaking at the last warm-up step), then falls along a cosine to LR/10 at the last
step. One-cycle anneals the warm-up along a cosine too; ``warmup="linear"`` gives the more
common linear ramp instead. ``lr_at`` is that schedule as a pure function of the step, so
a resumed run needs no scheduler state.
"""

from __future__ import annotations

import math


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def warmup_steps(total_steps: int, warmup_frac: float) -> int:
    return int(warmup_frac * total_steps)


def lr_at(
    step: int,
    total_steps: int,
    lr: float,
    warmup_frac: float = 0.1,
    initial_frac: float = 0.01,
    final_frac: float = 0.1,
    warmup: str = "cos",
) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if total_steps <= 1:
        return lr
    peak = warmup_steps(total_steps, warmup_frac) - 1  # OneCycleLR's end of phase one
    if peak > 0 and step <= peak:
        pct = step / peak
        start = lr * initial_frac
        if warmup == "linear":
            return start + (lr - start) * pct
        return _cos_anneal(start, lr, pct)
    peak = max(peak, 0)
    pct = min(1.0, (step - peak) / max(1, total_steps - 1 - peak))
    return _cos_anneal(lr, lr * final_frac, pct)
