"""Does the foundation issue's earlier probe (45.4 `objects` mIoU in 10 minutes) reproduce on this world?

That probe, as the issue describes it: a ~0.9M-parameter plain ViT (a 3-conv stride-2 stem, then 4 transformer
blocks; no group tokens, no grouping), four-image token mixing at the input (before any block), a per-token loss
against all captions of the batch, batches of 128, 10 minutes on 2 CPU cores, background called where the
background words' prompts take enough of the probability. Its icon world was simpler than this one and its text
encoder is not described. This script rebuilds that model around this toolkit's pieces (caption batches, mixing
plans, losses, optimiser, schedule, zero-shot evaluation, background calibration) with a choice of text encoder:

* `bow`: a bag of content words (the mean of learned word embeddings over a caption's words that are not stop
  words; the words are the training captions'), so each word gets its own gradient from the first step;
* `transformer`: the `toy` preset's text tower (CLIP BPE, 3 layers, mean pooling, text BatchNorm).

Losses: the image-text contrastive loss on the original images (mean of their token embeddings) + the mixed
segmentation loss (every token of a mixed image picks its source caption among the batch's). Evaluation: the `toy`
protocol (one 64-px window), background bias calibrated on `--tune` and scored on `--val`, plus uncalibrated.

    python benchmarks/plain_vit_probe.py --data /tmp/world --tune /tmp/world_tune/val --text bow --minutes 10

A diagnostic, not a model the toolkit ships: it answers whether the gap between the toy teacher's 10-minute score
and 45 is this world or this teacher. Appends a row to benchmarks/results/plain_vit_probe.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.calibration import calibrate_background_bias
from mixreorg_edge.data.keywords import STOP_WORDS, caption_words, words
from mixreorg_edge.data.segfolder import SegmentationFolder
from mixreorg_edge.data.shards import CaptionBatches, ImageTextShards
from mixreorg_edge.data.transforms import normalize_uint8
from mixreorg_edge.teacher.stems import conv_stem
from mixreorg_edge.teacher.losses import contrastive_loss, mixed_segmentation_loss
from mixreorg_edge.teacher.mixing import make_plan, mix_tokens
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.training import Budget, TrainConfig, build_optimizer, learning_rate
from mixreorg_edge.zeroshot import ZeroShotProtocol, evaluate_biases

RESULTS = Path(__file__).parent / "results" / "plain_vit_probe.json"
IMAGE_SIZE, PATCH, MIXED = 64, 8, 4


class BagOfWords(nn.Module):
    """Caption -> mean of its content words' learned embeddings (word ids from the training captions; 0 = none)."""

    def __init__(self, vocabulary: list[str], width: int) -> None:
        super().__init__()
        self.index = {word: i + 1 for i, word in enumerate(vocabulary)}
        self.embed = nn.EmbeddingBag(len(vocabulary) + 1, width, mode="mean", padding_idx=0)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = [[self.index.get(w, 0) for w in words(text) if w not in STOP_WORDS] or [0] for text in texts]
        longest = max(len(row) for row in ids)
        return torch.tensor([row + [0] * (longest - len(row)) for row in ids])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens)


class PlainViTProbe(nn.Module):
    """Conv stem + position embedding -> `depth` transformer blocks -> per-token joint-space embeddings; a text
    encoder into the same space; a learnable temperature. `encode_dense` / `encode_text` / `tokenize` / `scale` are
    what the toolkit's zero-shot evaluation calls."""

    def __init__(
        self, text: str, vocabulary: list[str], width: int = 128, depth: int = 4, embed_dim: int = 128
    ) -> None:
        super().__init__()
        self.stem = conv_stem(width, PATCH)
        grid = IMAGE_SIZE // PATCH
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, width) * 0.02)
        self.blocks = nn.Sequential(*(Block(width, 4) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.image_proj = nn.Linear(width, embed_dim)
        self.text = text
        if text == "bow":
            self.text_encoder = BagOfWords(vocabulary, width)
            self.text_proj = nn.Linear(width, embed_dim)
        else:  # a toy teacher for its text side only (its image encoder gets no gradient and is never run)
            self.toy_teacher = MixReorgTeacher(get_preset("toy")[0])
        self.logit_scale = nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100.0)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.text_encoder.tokenize(texts) if self.text == "bow" else self.toy_teacher.tokenize(texts)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.text == "bow":
            return F.normalize(self.text_proj(self.text_encoder(tokens)), dim=-1)
        return self.toy_teacher.encode_text(tokens)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.stem(images).flatten(2).transpose(1, 2) + self.pos_embed

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.norm(self.blocks(tokens))), dim=-1)

    def encode_dense(self, images: torch.Tensor) -> torch.Tensor:
        dense = self.token_embeddings(self.embed(images))
        grid = images.shape[-1] // PATCH
        return dense.transpose(1, 2).reshape(images.shape[0], -1, grid, grid)

    def losses(self, images: torch.Tensor, captions: list[str]) -> dict[str, torch.Tensor]:
        text = self.encode_text(self.tokenize(captions))
        tokens = self.embed(images)
        plan = make_plan(images.shape[0], (IMAGE_SIZE // PATCH,) * 2, MIXED)
        original = self.token_embeddings(tokens)
        image = F.normalize(original.mean(dim=1), dim=-1)
        terms = {"contrastive": contrastive_loss(image, text, self.scale()),
                 "segmentation": mixed_segmentation_loss(self.token_embeddings(mix_tokens(tokens, plan)), text,
                                                         plan.source, self.scale())}
        return {"loss": terms["contrastive"] + terms["segmentation"], **terms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="synthetic world (train shards, val folder)")
    parser.add_argument("--tune", type=Path, required=True, help="labelled tuning split for the background bias")
    parser.add_argument("--text", choices=("bow", "transformer"), default="bow")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)
    shards = ImageTextShards(args.data / "train")
    model = PlainViTProbe(args.text, caption_words(shards, max_words=1000))
    cfg = TrainConfig(batch_size=args.batch_size, lr=1e-3, warmup_steps=100, minutes=args.minutes, seed=args.seed)
    optimizer, budget = build_optimizer(model, cfg), Budget(cfg)
    batches = CaptionBatches(shards, cfg.batch_size, IMAGE_SIZE, cfg.seed)
    step, elapsed, started = 0, 0.0, time.perf_counter()
    model.train()
    while not budget.done(step, elapsed):
        tick = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step, budget.progress(step, elapsed))
        images, captions = batches.batch(step)
        terms = model.losses(normalize_uint8(images), captions)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        elapsed += time.perf_counter() - tick
        if step % 100 == 0:
            print(f"step {step} {elapsed:.0f} s " + " ".join(f"{k} {v.item():.3f}" for k, v in terms.items()),
                  flush=True)

    model.eval()
    protocol = ZeroShotProtocol(short_side=IMAGE_SIZE, window=IMAGE_SIZE, stride=IMAGE_SIZE // 2)
    entry = calibrate_background_bias(model, SegmentationFolder(args.tune, "objects"), protocol)
    bias = entry["background_bias"]
    objects = evaluate_biases(model, SegmentationFolder(args.data / "val", "objects"), protocol, (bias, 0.0))
    context = evaluate_biases(model, SegmentationFolder(args.data / "val", "context"), protocol, (0.0,))[0.0]
    row = {"text": args.text, "seed": args.seed, "minutes": args.minutes, "steps": step,
           "images_per_s": round(step * cfg.batch_size / elapsed, 1),
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
           "objects_miou": round(objects[bias]["miou"], 2), "objects_miou_uncalibrated": round(objects[0.0]["miou"], 2),
           "background_bias": bias, "context_miou": round(context["miou"], 2),
           "final_loss": round(terms["loss"].item(), 4), "seconds": round(time.perf_counter() - started, 1)}
    previous = json.loads(args.out.read_text())["rows"] if args.out.is_file() else []
    rows = previous + [row]
    print_rows("plain-ViT probe (the foundation issue's earlier probe, rebuilt)", rows)
    write_results(args.out, {**host_info(), "data": str(args.data), "tune": str(args.tune)}, rows)


if __name__ == "__main__":
    main()
