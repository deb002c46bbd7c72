"""Vocabularies: class names -> prompt-ensembled, L2-normalised text embeddings of a teacher.

A vocabulary's entries are the label set's foreground classes followed by its background words (prompts that
describe the background class, e.g. "sky", "grass"); `background_index` says where the background class sits in
the label set (None when the label set has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPLATES = {
    "simple": ("a photo of a {}.",),
    "ensemble": (
        "a photo of a {}.",
        "a picture of a {}.",
        "an image of a {}.",
        "a photo of the {}.",
        "a good photo of a {}.",
        "a photo of a small {}.",
        "a photo of a large {}.",
        "there is a {} in the scene.",
        "this is a photo of a {}.",
        "a {} in the picture.",
    ),
}

BACKGROUND = "background"


@dataclass
class Vocabulary:
    """What a segmentation head needs to turn joint-space embeddings into label-set scores."""

    label_set: list[str]  # class names in label order (may contain BACKGROUND)
    background_words: list[str]
    embeddings: torch.Tensor  # (num_foreground + num_background_words, E), L2-normalised
    logit_scale: float
    background_threshold: float = 0.0  # used only when there are no background words (GroupViT's rule)
    templates: str = "ensemble"

    @property
    def background_index(self) -> int | None:
        return self.label_set.index(BACKGROUND) if BACKGROUND in self.label_set else None

    @property
    def foreground(self) -> list[str]:
        return [name for name in self.label_set if name != BACKGROUND]


def get_templates(name: str) -> tuple[str, ...]:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template set {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


@torch.no_grad()
def embed_class_names(model: torch.nn.Module, names: list[str], templates: tuple[str, ...]) -> torch.Tensor:
    """Each name through every template, mean of the normalised embeddings, normalised again: (len(names), E)."""
    if not names:
        raise ValueError("the class list is empty")
    prompts = [template.format(name) for name in names for template in templates]
    text = model.encode_text(model.tokenize(prompts)).view(len(names), len(templates), -1)
    return torch.nn.functional.normalize(text.mean(dim=1), dim=-1)


def build_vocabulary(
    model: torch.nn.Module,
    label_set: list[str],
    background_words: list[str] | None = None,
    templates: str = "ensemble",
    background_threshold: float = 0.0,
) -> Vocabulary:
    """Vocabulary of `label_set` (plus background words) embedded by a teacher's text encoder."""
    if not label_set:
        raise ValueError("the class list is empty")
    background_words = list(background_words or [])
    if BACKGROUND not in label_set and background_words:
        raise ValueError("background words given for a label set without a 'background' class")
    foreground = [name for name in label_set if name != BACKGROUND]
    embeddings = embed_class_names(model, foreground + background_words, get_templates(templates))
    return Vocabulary(
        label_set=list(label_set),
        background_words=background_words,
        embeddings=embeddings.cpu(),
        logit_scale=float(model.scale().detach()),
        background_threshold=background_threshold,
        templates=templates,
    )
