"""The optimizer of the papers: AdamW (0.9, 0.95), weight decay on linear weights only.

Weight decay applies to the weight of every ``nn.Linear`` (compressed block linears and the
LM head, as in the llm-baselines code the QuEST runs used) and to nothing else: token
embedding and RMSNorm gains are not decayed.

``optimizer="amsgrad"`` is Algorithm 3 of the unified paper (Adam over the STE gradient with
AMSGrad normalisation, ṽ_t = max(v_t, ṽ_{t−1})), the optimizer its convergence theorem is
about. It is PyTorch's AdamW with ``amsgrad=True``, which keeps the decoupled weight decay
and Adam's bias correction of the rest of the setup (the correction only rescales the first
few hundred steps).

Learned quantizer scales (LSQ, LSQ+, PACT) are never decayed. With ``scale_lr`` they form a
group of their own whose rate is that share of the model's at every step (``LR_RATIO``): Adam
moves each parameter by about its learning rate per step whatever the gradient's size, so a
weight step of 0.01 under the model's 4e-3 random-walks through zero.
"""

from __future__ import annotations

import torch
from torch import nn

from capscale.train.config import TrainConfig

LR_RATIO = "lr_ratio"  # a group's rate as a share of the schedule's


def group_lr(group: dict, lr: float) -> float:
    """The rate of a parameter group when the schedule is at ``lr``."""
    return lr * group.get(LR_RATIO, 1.0)


def parameter_groups(model: nn.Module, weight_decay: float,
                     scale_ratio: float | None = None) -> list[dict]:
    """Decayed linear weights, then everything else undecayed; with ``scale_ratio``, learned
    quantizer scales in a third group at that share of the rate."""
    from capscale.model.learned_scale import LearnedScale

    decay, no_decay, scales, seen = [], [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            if isinstance(module, nn.Linear) and name == "weight":
                decay.append(p)
            elif scale_ratio is not None and isinstance(module, LearnedScale):
                scales.append(p)
            else:
                no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if scales:
        groups.append({"params": scales, "weight_decay": 0.0, LR_RATIO: scale_ratio})
    return groups


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    ratio = None if cfg.scale_lr is None else cfg.scale_lr / lr
    groups = parameter_groups(model, cfg.weight_decay, ratio)
    for group in groups:
        group["lr"] = group_lr(group, lr)  # the loop's schedule sets it again every step
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        amsgrad=cfg.optimizer == "amsgrad",
    )
