"""The training losses, as pure functions of tensors (docs/method.md, "The training recipe").

Every loss ignores padding. The distribution-matching losses are written as KL divergences:
their gradients are those of the soft cross-entropy of TinyBERT, and they are zero when the
student matches the teacher exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def span_loss(start_logits: Tensor, end_logits: Tensor, starts: Tensor, ends: Tensor, mask: Tensor) -> Tensor:
    """Mean of the start and end cross-entropies against gold token positions (B,).

    An answer outside the window points at [CLS] (position 0), as in the transformers examples.
    """
    start_logits = start_logits.masked_fill(~mask, torch.finfo(start_logits.dtype).min)
    end_logits = end_logits.masked_fill(~mask, torch.finfo(end_logits.dtype).min)
    return (F.cross_entropy(start_logits.float(), starts) + F.cross_entropy(end_logits.float(), ends)) / 2


def soft_cross_entropy(student: Tensor, teacher: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """KL(teacher || student) of the softmax distributions over the real positions of each row,
    at a temperature, averaged over rows; logits (B, T), mask (B, T) True on real tokens.

    >>> x = torch.tensor([[1.0, 2.0, 0.0]]); m = torch.tensor([[True, True, False]])
    >>> float(soft_cross_entropy(x, x, m))
    0.0
    """
    neg = torch.finfo(torch.float32).min
    s = F.log_softmax(student.float().masked_fill(~mask, neg) / temperature, dim=-1)
    t = F.log_softmax(teacher.float().masked_fill(~mask, neg) / temperature, dim=-1)
    kl = (t.exp() * (t - s)).masked_fill(~mask, 0.0).sum(dim=-1)
    return kl.mean() * temperature**2


def prediction_loss(student, teacher, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Prediction-layer distillation: the soft loss on the start and on the end distributions."""
    return (
        soft_cross_entropy(student.start_logits, teacher.start_logits, mask, temperature)
        + soft_cross_entropy(student.end_logits, teacher.end_logits, mask, temperature)
    ) / 2


def hidden_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """MSE between (projected) student and teacher hidden states (B, T, d) over real tokens."""
    err = (student.float() - teacher.float()).pow(2).mean(dim=-1)  # (B, T)
    return err[mask].mean()


def attention_loss(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """MSE between attention maps (B, H, T, T) over real query and key positions.

    Models with different head counts are compared on their maps averaged over heads.
    """
    if student.shape[1] != teacher.shape[1]:
        student, teacher = student.mean(dim=1, keepdim=True), teacher.mean(dim=1, keepdim=True)
    pairs = (mask[:, :, None] & mask[:, None, :])[:, None].expand_as(student)  # (B, H, T, T)
    return (student.float() - teacher.float()).pow(2)[pairs].mean()


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """TinyBERT's uniform mapping: student layer m learns teacher layer m * L_T / L_S, m = 0..L_S
    (0 is the embedding output).

    >>> layer_map(6, 12)
    [0, 2, 4, 6, 8, 10, 12]
    """
    if teacher_layers % student_layers:
        raise ValueError(
            f"a {teacher_layers}-layer teacher cannot map uniformly onto {student_layers} layers"
        )
    step = teacher_layers // student_layers
    return [m * step for m in range(student_layers + 1)]
