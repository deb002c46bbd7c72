"""Distillation losses: dense feature distillation (cosine) and logit distillation (KL over a vocabulary)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def feature_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cosine) between (B, E, h, w) student and teacher embeddings, per location."""
    return (1.0 - F.cosine_similarity(student, teacher.to(student.dtype), dim=1)).mean()


def logit_loss(
    student: torch.Tensor, teacher: torch.Tensor, vocabulary: torch.Tensor, scale: float, temperature: float
) -> torch.Tensor:
    """KL(teacher || student) of each location's distribution over a (V, E) vocabulary, softened by `temperature`
    and multiplied by temperature^2 (Hinton et al.)."""
    teacher_logits = scale * torch.einsum("behw,ve->bvhw", F.normalize(teacher.to(student.dtype), dim=1), vocabulary)
    student_logits = scale * torch.einsum("behw,ve->bvhw", student, vocabulary)
    target = (teacher_logits / temperature).log_softmax(dim=1)
    prediction = (student_logits / temperature).log_softmax(dim=1)
    kl = F.kl_div(prediction, target, log_target=True, reduction="none").sum(dim=1)
    return kl.mean() * temperature**2
