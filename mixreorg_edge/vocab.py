"""Vocabularies: class names -> prompt-ensembled, L2-normalised text embeddings of a teacher.

A vocabulary's entries are the label set's foreground classes followed by its background words (prompts that
describe the background class, e.g. "sky", "grass"); `background_index` says where the background class sits in
the label set (None when the label set has none).

Students never run a text encoder: a vocabulary is built once from the teacher (`vocabulary_for`), saved as a
safetensors file (`save_vocabulary`) and loaded with checks that it fits the model (`load_vocabulary`). The file
records the fingerprint of the teacher's text space (`teacher_fingerprint`), so a vocabulary embedded by one
teacher is never paired with a student distilled from another.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import atomic_save_safetensors, fingerprint, read_safetensors

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

VOCABULARY_KIND = "vocabulary"
FORMAT_VERSION = 1
TEXT_SPACE_PREFIXES = ("text_encoder.", "text_proj.", "text_norm.")
TEXT_SPACE_NAMES = ("logit_scale",)

_BENCHMARK_SETS = ("voc", "context", "coco_object", "ade20k")
_SYNTHETIC_SETS = {"synthetic-objects": "objects", "synthetic-context": "context"}
BUILTIN_LABEL_SETS: tuple[str, ...] = (*_BENCHMARK_SETS, *_SYNTHETIC_SETS)
CLASS_FILE_SUFFIXES = (".json", ".txt")
_JSON_KEYS = {"classes", "background_words", "background_threshold"}


@dataclass
class Vocabulary:
    """What a segmentation head needs to turn joint-space embeddings into label-set scores."""

    label_set: list[str]  # class names in label order (may contain BACKGROUND)
    background_words: list[str]
    embeddings: torch.Tensor  # (num_foreground + num_background_words, E), L2-normalised
    logit_scale: float
    background_threshold: float = 0.0  # used only when there are no background words (GroupViT's rule)
    templates: str = "ensemble"
    teacher: str = ""  # teacher_fingerprint of the teacher whose text encoder embedded the names ("" = unknown)
    # Added to every background word's logit: a log-prior on the background class, calibrated per model on a
    # labelled split that is not the evaluation split (see calibration.py). Only meaningful with background words.
    background_bias: float = 0.0

    def __post_init__(self) -> None:
        if self.background_bias and not self.background_words:
            raise ValueError("a background bias needs background words (it is added to their logits)")

    @property
    def background_index(self) -> int | None:
        return self.label_set.index(BACKGROUND) if BACKGROUND in self.label_set else None

    @property
    def foreground(self) -> list[str]:
        return [name for name in self.label_set if name != BACKGROUND]

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[-1])


@dataclass
class LabelSet:
    """Class names in label order, the words describing the background class, and GroupViT's threshold."""

    classes: list[str]
    background_words: list[str] = field(default_factory=list)
    background_threshold: float = 0.0

    def __post_init__(self) -> None:
        self.classes = _clean_names(self.classes, "class")
        self.background_words = _clean_names(self.background_words, "background word", allow_empty=True)
        if self.background_words and BACKGROUND not in self.classes:
            raise ValueError(f"background words given for a label set without a {BACKGROUND!r} class")
        entries = self.classes + self.background_words
        duplicates = sorted({name for name in entries if entries.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate class names / background words: {', '.join(duplicates)}")
        if not 0.0 <= self.background_threshold <= 1.0:
            raise ValueError(f"background_threshold must be in [0, 1], got {self.background_threshold}")
        if BACKGROUND in self.classes and not self.background_words and self.background_threshold == 0.0:
            raise ValueError(f"a {BACKGROUND!r} class needs background words (e.g. sky, grass, wall) or a "
                             "background_threshold (GroupViT's: 0.95 for VOC, 0.35 for Context), or it could never "
                             'be predicted: give a class file {"classes": [...], "background_words": [...]} or '
                             '{"classes": [...], "background_threshold": 0.95}, or leave "background" out')


def _clean_names(names: object, what: str, allow_empty: bool = False) -> list[str]:
    """Stripped names; ValueError for a non-list, non-string entries, blank names or (unless allowed) no names."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f"the {what} list must be a list of names, got {type(names).__name__}")
    cleaned = []
    for position, name in enumerate(names, start=1):
        if not isinstance(name, str):
            raise ValueError(f"{what} {position} is a {type(name).__name__}, not a name: {name!r}")
        if not name.strip():
            raise ValueError(f"{what} {position} is blank")
        cleaned.append(name.strip())
    if not cleaned and not allow_empty:
        raise ValueError(f"the {what} list is empty")
    return cleaned


def get_templates(name: str) -> tuple[str, ...]:
    """The prompt templates of a named template set."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown template set {name!r}; choose one of: {', '.join(TEMPLATES)}") from None


def teacher_fingerprint(model: torch.nn.Module) -> str:
    """16 hex chars of a sha256 over the tensors defining the text space (text encoder, text projection,
    logit scale), in sorted name order: the same weights always give the same fingerprint."""
    return fingerprint(model, lambda name: name.startswith(TEXT_SPACE_PREFIXES) or name in TEXT_SPACE_NAMES)


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
    background_bias: float = 0.0,
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
        teacher=teacher_fingerprint(model),
        background_bias=background_bias,
    )


def vocabulary_for(model: torch.nn.Module, spec: str, templates: str = "ensemble") -> Vocabulary:
    """Vocabulary of the label set named by `spec` (see `parse_classes`) embedded by the teacher `model`."""
    labels = parse_classes(spec)
    return build_vocabulary(model, labels.classes, labels.background_words, templates, labels.background_threshold)


def _check_entries(vocabulary: Vocabulary, source: str) -> None:
    """ValueError unless the embeddings are (foreground + background words, E)."""
    rows = len(vocabulary.foreground) + len(vocabulary.background_words)
    shape = tuple(vocabulary.embeddings.shape)
    if len(shape) != 2 or shape[0] != rows:
        raise ValueError(f"{source}: embeddings of shape {shape} for {rows} entries (foreground + background words)")


def save_vocabulary(vocabulary: Vocabulary, path: Path | str) -> None:
    """Write a vocabulary atomically as safetensors: tensor `embeddings`, everything else as JSON metadata."""
    _check_entries(vocabulary, "vocabulary")
    info = {
        "format_version": FORMAT_VERSION,
        "label_set": vocabulary.label_set,
        "background_words": vocabulary.background_words,
        "logit_scale": vocabulary.logit_scale,
        "background_threshold": vocabulary.background_threshold,
        "background_bias": vocabulary.background_bias,
        "templates": {"name": vocabulary.templates, "prompts": list(get_templates(vocabulary.templates))},
        "teacher": vocabulary.teacher,
        "embed_dim": vocabulary.embed_dim,
    }
    metadata = {"kind": VOCABULARY_KIND, "vocabulary": json.dumps(info)}
    atomic_save_safetensors({"embeddings": vocabulary.embeddings.float()}, Path(path), metadata)


def load_vocabulary(
    path: Path | str, expected_dim: int | None = None, expected_teacher: str | None = None
) -> Vocabulary:
    """Read a file written by `save_vocabulary`; ValueError when it is not a vocabulary, or when its embedding
    dimension or teacher fingerprint differ from what the model expects (checked only when given)."""
    path = Path(path)
    tensors, metadata = read_safetensors(path, VOCABULARY_KIND)
    if "embeddings" not in tensors:
        raise ValueError(f"{path} is not a vocabulary file (no embeddings)")
    try:
        info = json.loads(metadata["vocabulary"])
        if info["format_version"] != FORMAT_VERSION:
            raise ValueError(f"{path}: vocabulary format version {info['format_version']} (expected {FORMAT_VERSION})")
        vocabulary = Vocabulary(
            label_set=list(info["label_set"]),
            background_words=list(info["background_words"]),
            embeddings=tensors["embeddings"],
            logit_scale=float(info["logit_scale"]),
            background_threshold=float(info["background_threshold"]),
            templates=str(info["templates"]["name"]),
            teacher=str(info["teacher"]),
            background_bias=float(info.get("background_bias", 0.0)),  # files written before calibration: none
        )
        recorded_dim = int(info["embed_dim"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: malformed vocabulary metadata ({type(err).__name__}: {err})") from err
    _check_entries(vocabulary, str(path))
    if vocabulary.embed_dim != recorded_dim:
        raise ValueError(f"{path}: embeddings have dimension {vocabulary.embed_dim}, metadata says {recorded_dim}")
    if expected_dim is not None and vocabulary.embed_dim != expected_dim:
        raise ValueError(
            f"{path}: vocabulary has dimension {vocabulary.embed_dim} but the model expects {expected_dim}"
        )
    if expected_teacher is not None and vocabulary.teacher != expected_teacher:
        raise ValueError(
            f"{path}: vocabulary was built by teacher {vocabulary.teacher or '(unknown)'}, "
            f"this model distils teacher {expected_teacher}"
        )
    return vocabulary


@cache
def _benchmark_classnames() -> dict:
    """The package's assets/classnames.json (benchmark label sets and GroupViT's background thresholds)."""
    text = resources.files("mixreorg_edge").joinpath("assets", "classnames.json").read_text(encoding="utf-8")
    return json.loads(text)


def builtin_label_set(name: str) -> LabelSet:
    """A built-in label set: a benchmark's (voc, context, coco_object, ade20k) or the synthetic world's."""
    if name in _SYNTHETIC_SETS:
        from .data.synth import LABEL_SETS, STUFF  # here, so deploying a head does not import the data stack

        classes = list(LABEL_SETS[_SYNTHETIC_SETS[name]])
        return LabelSet(classes, list(STUFF) if BACKGROUND in classes else [])
    if name in _BENCHMARK_SETS:
        names = _benchmark_classnames()
        return LabelSet(list(names[name]), [], float(names["background_threshold"].get(name, 0.0)))
    raise ValueError(f"unknown label set {name!r}; built-in: {', '.join(BUILTIN_LABEL_SETS)}")


def _read_class_file(path: Path) -> LabelSet:
    """A .json (list of names, or {"classes", "background_words", "background_threshold"}) or .txt class file."""
    if not path.is_file():
        raise FileNotFoundError(f"class list file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".txt":
        return LabelSet([line for line in text.splitlines() if line.strip()])
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"invalid JSON in {path}: {err}") from err
    if isinstance(data, dict):
        unknown = sorted(data.keys() - _JSON_KEYS)
        if unknown or "classes" not in data:
            raise ValueError(f'{path}: expected keys "classes" and optionally "background_words", '
                             f'"background_threshold"; got {sorted(data)}')
        threshold = data.get("background_threshold", 0.0)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise ValueError(f"{path}: background_threshold must be a number, got {threshold!r}")
        return LabelSet(data["classes"], data.get("background_words", []), float(threshold))
    return LabelSet(data)


def _near_builtin(spec: str) -> str | None:
    """The built-in label set a bare word is likely a mistyping of ("vocc", "coco", "ade", "voc2012"), else None."""
    word = spec.lower()
    close = difflib.get_close_matches(word, BUILTIN_LABEL_SETS, n=1, cutoff=0.75)
    if close:
        return close[0]
    return next((name for name in BUILTIN_LABEL_SETS if (len(word) >= 3 and name.startswith(word))
                 or (word.startswith(name) and not word.isalpha())), None)


def single_class(name: str) -> LabelSet:
    """One class against the background, described by the default background words (the synthetic world's stuff:
    sky, grass, water, sand, wall): with one class, only background words can tell it from the rest of the image
    (GroupViT's threshold never fires, the one class taking the whole softmax)."""
    return LabelSet([BACKGROUND, name], builtin_label_set("synthetic-objects").background_words)


def _check_one_class(labels: LabelSet, spec: str) -> LabelSet:
    """A label set with one foreground class: against the default background words when it has no background;
    refused when its background has only a threshold (it would never win)."""
    foreground = [name for name in labels.classes if name != BACKGROUND]
    if len(foreground) != 1 or labels.background_words:
        return labels
    if BACKGROUND in labels.classes:
        raise ValueError(f"{spec}: with one class ({foreground[0]!r}) a background_threshold never fires (the class "
                         'takes the whole softmax); give background words, e.g. {"classes": ["background", '
                         f'"{foreground[0]}"], "background_words": ["sky", "grass", "wall"]}}')
    return single_class(foreground[0])


def parse_classes(spec: str) -> LabelSet:
    """A label set from a built-in name ("voc"), a .json / .txt class file, a comma-separated list ("a,b,c"), or one
    class name ("sun"), which is segmented against the background (see `single_class`; so is a file or list of one
    class without background words).

    A bare word close to a built-in name ("vocc") is refused as a likely typo; a file of one class names it."""
    spec = spec.strip()
    if not spec:
        raise ValueError("the class list is empty")
    if spec in BUILTIN_LABEL_SETS:
        return builtin_label_set(spec)
    path = Path(spec)
    if path.suffix.lower() in CLASS_FILE_SUFFIXES:
        return _check_one_class(_read_class_file(path), spec)
    if "," in spec:
        return _check_one_class(LabelSet(spec.split(",")), spec)
    if path.exists() or "/" in spec or "\\" in spec:
        if not path.exists():
            raise FileNotFoundError(f"class list file not found: {path}")
        raise ValueError(f"{path}: unsupported class list file (use {' or '.join(CLASS_FILE_SUFFIXES)})")
    near = _near_builtin(spec)
    if near is not None:
        raise ValueError(
            f"unknown label set {spec!r} (did you mean {near}?); use a built-in ({', '.join(BUILTIN_LABEL_SETS)}), "
            f"a {' or '.join(CLASS_FILE_SUFFIXES)} file, a comma-separated list of class names, or a .txt file to "
            f"segment one class named {spec!r}"
        )
    return single_class(spec)
