"""How fast can the toy teacher's image encoder learn the synthetic world's *things* at all?

An upper bound for caption-supervised training: the toy preset's stem + stage-1 layers (the layers the token readout
uses) with a linear head are trained with *direct* labels, the thing words named in each caption (multi-label,
max over tokens), on the same shards and batches as `train-teacher`. If even this learns slowly, no contrastive or
mixing objective can segment things within the same budget.

    python benchmarks/thing_learnability.py --data runs/quickstart/data --steps 2000 --lr 1e-3
    python benchmarks/thing_learnability.py --data runs/quickstart/data --steps 2000 --lr 1e-3 --stem resnet \
        --out benchmarks/results/thing_learnability_resnet.json

`--head text` replaces the linear layer by the toy teacher's text tower (the class vectors are the prompt
embeddings of "a photo of a {thing}.", trained with everything else): is a text tower trained from scratch a usable
classifier at all? `--text-batchnorm` adds the teacher's `text_batchnorm` option.

    python benchmarks/thing_learnability.py --data runs/quickstart/data --steps 750 --head text \
        --out benchmarks/results/thing_learnability_text.json
    python benchmarks/thing_learnability.py --data runs/quickstart/data --steps 750 --head text --text-batchnorm \
        --out benchmarks/results/thing_learnability_text_bn.json

Writes benchmarks/results/thing_learnability.json (or --out): one row per evaluation point (held-out recall and
precision of thing presence at score > 0, and the threshold-free top-n recall, on the first --val-images
validation images).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.data.keywords import words
from mixreorg_edge.data.segfolder import SegmentationFolder
from mixreorg_edge.data.shards import CaptionBatches, ImageTextShards
from mixreorg_edge.data.synth import THINGS
from mixreorg_edge.data.transforms import normalize_uint8
from mixreorg_edge.teacher.image_encoder import GroupViTImageEncoder
from mixreorg_edge.teacher.losses import multilabel_cross_entropy
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.presets import get_preset

RESULTS = Path(__file__).parent / "results" / "thing_learnability.json"
RESNET_STEM_CHANNELS = (32, 64, 128)


def thing_labels(captions: list[str]) -> torch.Tensor:
    """(N, things) 0/1: which thing words each caption names (split into words as the teacher's keywords are)."""
    named = [set(words(caption)) for caption in captions]
    return torch.tensor([[float(thing in caption_words) for thing in THINGS] for caption_words in named])


def validation_set(val: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and thing labels (the things present in their `objects` masks) of the first `count` validation images."""
    dataset = SegmentationFolder(val, "objects")
    images, labels = [], torch.zeros(min(count, len(dataset)), len(THINGS))
    for row in range(len(labels)):
        image, mask, _ = dataset[row]
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
        for index in np.unique(mask):
            if 0 < index < len(dataset.classes):
                labels[row, THINGS.index(dataset.classes[index])] = 1.0
    return torch.stack(images), labels


class ThingProbe(torch.nn.Module):
    """Toy image encoder up to stage 1 (the token readout's layers) + a thing classifier per token: a linear layer,
    or (`head="text"`) the toy teacher's own text tower, whose prompt embeddings "a photo of a {thing}." are the
    class vectors (the teacher's token readout and logit scale), all trained together."""

    def __init__(self, stem: str | None = None, head: str = "linear", text_batchnorm: bool = False) -> None:
        super().__init__()
        teacher_cfg, _ = get_preset("toy")
        teacher_cfg.text_batchnorm = text_batchnorm
        if stem is not None:
            teacher_cfg.image.stem = stem
            teacher_cfg.image.stem_channels = RESNET_STEM_CHANNELS if stem == "resnet" else ()
        self.teacher = MixReorgTeacher(teacher_cfg) if head == "text" else None
        self.encoder = self.teacher.image_encoder if self.teacher else GroupViTImageEncoder(teacher_cfg.image)
        if self.teacher:
            self.register_buffer("prompts", self.teacher.keyword_prompt_tokens(list(THINGS)))  # the teacher's own
        else:
            self.norm = torch.nn.LayerNorm(teacher_cfg.image.width)
            self.head = torch.nn.Linear(teacher_cfg.image.width, len(THINGS))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        tokens = encoder.first_stage.split(encoder.stage_one(encoder.embed(images)))[0]
        if self.teacher is None:
            return self.head(self.norm(tokens)).amax(dim=1)  # a thing is present if any token sees it
        teacher = self.teacher
        similarity = teacher.token_embeddings(tokens) @ teacher.encode_text(self.prompts).t()
        return teacher.scale() * similarity.amax(dim=1)


def probe_loss(scores: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """Linear head: per-thing binary cross-entropy. Text head: the teacher's keyword loss (image -> prompts), a
    softmax over the things against the uniform distribution over those present (images without things left out)."""
    if head == "linear":
        return F.binary_cross_entropy_with_logits(scores, labels)
    return multilabel_cross_entropy(scores, labels)


def top_n_recall(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of present things among each image's n best-scored things (n = how many it shows); threshold-free."""
    counts = labels.sum(dim=1).long()
    hits = sum(labels[row, scores[row].topk(int(counts[row])).indices].sum().item() for row in range(len(labels)))
    return hits / labels.sum().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="synthetic world (train/ shards + val/ folder)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--val-images", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", choices=("patch", "conv", "resnet"), default=None,
                        help=f"image stem (default: the toy preset's; resnet uses channels {RESNET_STEM_CHANNELS})")
    parser.add_argument("--head", choices=("linear", "text"), default="linear",
                        help="thing classifier: a linear layer, or the toy teacher's text tower (prompt embeddings)")
    parser.add_argument("--text-batchnorm", action="store_true", help="the teacher's text_batchnorm option (--head text)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model = ThingProbe(args.stem, args.head, args.text_batchnorm)
    stem = args.stem or get_preset("toy")[0].image.stem
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    batches = CaptionBatches(ImageTextShards(args.data / "train"), args.batch_size, 64, args.seed)
    val_images, val_labels = validation_set(args.data / "val", args.val_images)
    rows, started = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        images, captions = batches.batch(step - 1)
        loss = probe_loss(model(normalize_uint8(images)), thing_labels(captions), args.head)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                scores = model(normalize_uint8(val_images))
            model.train()
            row = {"step": step, "images_seen": step * args.batch_size, "train_loss": round(loss.item(), 4)}
            if args.head == "linear":  # a softmax head has no presence threshold
                predicted = (scores > 0).float()
                hits = (predicted * val_labels).sum().item()
                row["val_recall"] = round(hits / val_labels.sum().item(), 4)
                row["val_precision"] = round(hits / max(predicted.sum().item(), 1.0), 4)
            rows.append({**row, "val_top_n_recall": round(top_n_recall(scores, val_labels), 4),
                         "seconds": round(time.perf_counter() - started, 1)})

    counts = val_labels.sum(dim=1)
    chance = (counts**2).sum().item() / (len(THINGS) * counts.sum().item())  # top-n recall of random scores
    head = f"{args.head} head" + (", text BatchNorm" if args.text_batchnorm else "")
    print_rows(f"thing presence with direct labels, toy encoder ({stem} stem, {head}), batch {args.batch_size}, "
               f"lr {args.lr}; chance top-n recall {chance:.3f}", rows)
    meta = {"stem": stem, "head": args.head, "text_batchnorm": args.text_batchnorm,
            "chance_top_n_recall": round(chance, 4), "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "seed": args.seed, "threads": torch.get_num_threads(), "torch": torch.__version__}
    write_results(args.out, meta, rows)
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
