"""Learning-rate schedule of the papers' runs.

The QuEST / llm-baselines code behind both papers uses PyTorch's one-cycle schedule with
``div_factor=100`` and ``final_div_factor=0.1`` and cosine annealing: the learning rate
rises from LR/100 to LR over the warm-up (10% of the steps), then falls along a cosine to
LR/10 at the last step. One-cycle anneals the warm-up along a cosine too; ``warmup="linear"``
gives the more common linear ramp instead.
"""

from __future__ import annotations

import math


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


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
    warm = int(warmup_frac * total_steps)
    if warm > 0 and step <= warm:
        pct = step / warm
        start = lr * initial_frac
        if warmup == "linear":
            return start + (lr - start) * pct
        return _cos_anneal(start, lr, pct)
    pct = min(1.0, (step - warm) / max(1, total_steps - 1 - warm))
    return _cos_anneal(lr, lr * final_frac, pct)
