"""What could the toy teacher's image encoder segment after the same CPU budget with *perfect* supervision?

The toy preset's stem + stage-1 layers (the layers its token readout uses) + a linear classifier over the `objects`
classes, trained with per-pixel cross-entropy on the masks of a labelled split (token logits upsampled bilinearly,
255 ignored) for `--minutes` of training time, with the teacher's optimiser and schedule (AdamW, warm-up +
cosine over the time budget, batch 64). Evaluated on the validation split at the toy protocol's training scale
(one 64-px window, logits upsampled, argmax; no text tower, no background rule). Captions carry less than masks, so
this bounds what `train-teacher --preset toy --minutes M` can reach with this encoder on this host; it is a
diagnostic, not a model the toolkit ships (training the teacher never reads masks).

    mixreorg-edge data synth --out /tmp/world_sup --train 0 --val 20000 --seed 2   # labelled training split
    python benchmarks/supervised_ceiling.py --train /tmp/world_sup/val --val /tmp/world/val --minutes 10

Writes benchmarks/results/supervised_ceiling.json: validation mIoU at each `--eval-every` minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.data.segfolder import SegmentationFolder
from mixreorg_edge.data.transforms import normalize_uint8
from mixreorg_edge.metrics import SegmentationMetric
from mixreorg_edge.teacher.image_encoder import GroupViTImageEncoder
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.training import Budget, build_optimizer, learning_rate

RESULTS = Path(__file__).parent / "results" / "supervised_ceiling.json"
LABEL_SET = "objects"


class TokenClassifier(torch.nn.Module):
    """The toy preset's image encoder up to stage 1, then LayerNorm + linear per token: (B, C, H/8, W/8) logits."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        image_cfg = get_preset("toy")[0].image
        self.encoder = GroupViTImageEncoder(image_cfg)
        self.norm = torch.nn.LayerNorm(image_cfg.width)
        self.classifier = torch.nn.Linear(image_cfg.width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        encoder = self.encoder
        tokens = encoder.first_stage.split(encoder.stage_one(encoder.embed(images)))[0]
        logits = self.classifier(self.norm(tokens))  # (B, L, C)
        height, width = encoder.token_grid(tuple(images.shape[-2:]))
        return logits.transpose(1, 2).reshape(images.shape[0], -1, height, width)


def load_split(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images (N, 3, H, W) uint8 and `objects` masks (N, H, W) int64 of a labelled folder, and its classes."""
    dataset = SegmentationFolder(root, LABEL_SET)
    images, masks = [], []
    for index in range(len(dataset)):
        image, mask, _ = dataset[index]
        images.append(torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask.astype(np.int64)))
    return torch.stack(images), torch.stack(masks), dataset.classes


def pixel_logits(model: TokenClassifier, images: torch.Tensor) -> torch.Tensor:
    logits = model(normalize_uint8(images))
    return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


@torch.no_grad()
def validation_miou(model: TokenClassifier, images: torch.Tensor, masks: torch.Tensor, classes: list[str]) -> float:
    model.eval()
    metric = SegmentationMetric(len(classes))
    for start in range(0, len(images), 100):
        metric.update(pixel_logits(model, images[start : start + 100]).argmax(dim=1), masks[start : start + 100])
    model.train()
    return metric.compute()["miou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, required=True, help="labelled split to train on (images/ + masks/)")
    parser.add_argument("--val", type=Path, required=True, help="labelled split to score on (never trained on)")
    parser.add_argument("--minutes", type=float, default=10.0, help="training time (the teacher's 10-minute budget)")
    parser.add_argument("--eval-every", type=float, default=2.0, help="minutes between validation scores")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.train.resolve() == args.val.resolve():
        parser.error("--train and --val must be different splits")

    torch.manual_seed(args.seed)
    train_images, train_masks, classes = load_split(args.train)
    val_images, val_masks, val_classes = load_split(args.val)
    if classes != val_classes:
        parser.error(f"the two splits' {LABEL_SET} classes differ")
    model = TokenClassifier(len(classes))
    _, train_cfg = get_preset("toy")
    train_cfg.minutes, train_cfg.seed = args.minutes, args.seed
    optimizer, budget = build_optimizer(model, train_cfg), Budget(train_cfg)
    generator = torch.Generator().manual_seed(args.seed)
    rows, step, elapsed, next_eval = [], 0, 0.0, args.eval_every * 60.0
    while not budget.done(step, elapsed):
        started = time.perf_counter()
        batch = torch.randint(len(train_images), (train_cfg.batch_size,), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(train_cfg, step, budget.progress(step, elapsed))
        loss = F.cross_entropy(pixel_logits(model, train_images[batch]), train_masks[batch], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
        optimizer.step()
        step, elapsed = step + 1, elapsed + time.perf_counter() - started  # training time only, as train-teacher
        if elapsed >= next_eval or budget.done(step, elapsed):
            next_eval += args.eval_every * 60.0
            rows.append({"minutes": round(elapsed / 60.0, 2), "step": step, "images_seen": step * train_cfg.batch_size,
                         "train_loss": round(loss.item(), 4),
                         "val_miou": round(validation_miou(model, val_images, val_masks, classes), 2)})
            Console().print(rows[-1])

    print_rows(f"toy encoder + linear classifier, per-pixel {LABEL_SET} masks, {args.minutes:g} minutes, "
               f"{torch.get_num_threads()} threads: validation mIoU at the training scale", rows)
    meta = {**host_info(), "train": str(args.train), "train_images": len(train_images), "val": str(args.val),
            "val_images": len(val_images), "label_set": LABEL_SET, "minutes": args.minutes, "seed": args.seed,
            "batch_size": train_cfg.batch_size, "lr": train_cfg.lr}
    write_results(args.out, meta, rows)
    Console().print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
