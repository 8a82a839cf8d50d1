"""The optimizer of the papers: AdamW (0.9, 0.95), weight decay on linear weights only.

Weight decay applies to the weight of every ``nn.Linear`` (compressed block linears and the
LM head, as in the llm-baselines code the QuEST runs used) and to nothing else: token
embedding and RMSNorm gains are not decayed.

``optimizer="amsgrad"`` is Algorithm 3 of the unified paper (Adam over the STE gradient with
AMSGrad normalisation, ṽ_t = max(v_t, ṽ_{t−1})), the optimizer its convergence theorem is
about. It is PyTorch's AdamW with ``amsgrad=True``, which keeps the decoupled weight decay
and Adam's bias correction of the rest of the setup (the correction only rescales the first
few hundred steps).
"""

from __future__ import annotations

import torch
from torch import nn

from capscale.train.config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if id(p) in seen or not p.requires_grad:
                continue
            seen.add(id(p))
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(
        groups,
        lr=lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.eps,
        amsgrad=cfg.optimizer == "amsgrad",
    )
