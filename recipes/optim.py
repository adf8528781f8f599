"""Optimiser parameter groups (weight decay, layer-wise lr decay) and the warm-up + cosine schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, *, lr: float, weight_decay: float,
                 layer_decay: float | None = None) -> list[dict]:
    """AdamW groups: decay only matrices (dim >= 2) outside ``model.no_weight_decay()``;
    with ``layer_decay`` d, layer group i of L gets ``lr * d ** (L - 1 - i)`` (BEiT / MAE)."""
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    skip = model.no_weight_decay()
    last = model.num_layer_groups - 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = param.ndim >= 2 and name not in skip
        layer = model.layer_id(name) if layer_decay else last
        scale = layer_decay ** (last - layer) if layer_decay else 1.0
        group = groups.setdefault((layer, decay), {
            "params": [], "weight_decay": weight_decay if decay else 0.0,
            "lr": lr * scale, "lr_scale": scale, "name": f"layer{layer}_{'decay' if decay else 'no_decay'}",
        })
        group["params"].append(param)
    if not groups:
        raise ValueError("no trainable parameters: check the fine-tuning mode")
    return list(groups.values())


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from ~0 to each group's lr, then cosine decay to ``min_lr_ratio`` of it.
    Stepped once per optimiser step."""
    warmup_steps = max(0, min(warmup_steps, total_steps - 1))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def adamw_warmup_cosine(module: Any) -> dict[str, Any]:
    """A LightningModule's ``configure_optimizers`` for AdamW over ``module.model`` with
    warm-up + cosine, stepped per optimiser step, from its hyperparameters ``lr``, ``min_lr``,
    ``weight_decay``, ``betas``, ``warmup_epochs`` (fractions allowed) and ``layer_decay``."""
    hp = module.hparams
    groups = param_groups(module.model, lr=hp.lr, weight_decay=hp.weight_decay,
                          layer_decay=hp.layer_decay)
    fused = torch.cuda.is_available() and next(module.parameters()).is_cuda
    optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused or None)
    total = max(1, int(module.trainer.estimated_stepping_batches))
    steps_per_epoch = total / max(1, module.trainer.max_epochs or 1)
    scheduler = warmup_cosine(optimizer, warmup_steps=int(hp.warmup_epochs * steps_per_epoch),
                              total_steps=total, min_lr_ratio=hp.min_lr / hp.lr)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
