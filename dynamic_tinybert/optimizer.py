"""The optimizer of every training stage, and its learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from .train_settings import TrainSettings


def adamw(trainee: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """AdamW, with no weight decay on biases and norms, over what the stage trains."""
    decay, no_decay = [], []
    for parameter in trainee.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=settings.lr)


def learning_rate(step: int, total: int, settings: TrainSettings) -> float:
    """Linear warm-up to the peak, then linear decay to zero at the last step."""
    warmup = round(settings.warmup * total)
    if step < warmup:
        return settings.lr * (step + 1) / warmup
    return settings.lr * max(0.0, (total - step) / max(1, total - warmup))
