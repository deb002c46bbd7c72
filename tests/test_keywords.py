import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_teacher_config, tiny_train_config
from mixreorg_edge.data.keywords import caption_keywords, keyword_batch
from mixreorg_edge.teacher.losses import contrastive_loss, multilabel_contrastive_loss
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.train import train_teacher

VOCABULARY = frozenset({"car", "fish", "sky", "water", "tree"})


def test_caption_keywords_are_distinct_vocabulary_words_in_order() -> None:
    assert caption_keywords("A fish, a car and another fish in the water!", VOCABULARY) == ["fish", "car", "water"]
    assert caption_keywords("nothing to see", VOCABULARY) == []


def test_keyword_batch_targets_and_per_caption_limit() -> None:
    torch.manual_seed(0)
    captions = ["a car and a fish and a tree in the water", "a car in the sky", "hello"]
    words, targets = keyword_batch(captions, VOCABULARY, per_caption=2)
    assert targets.shape == (3, len(words)) and len(set(words)) == len(words)
    assert targets.sum(dim=1).tolist() == [2.0, 2.0, 0.0]
    assert (targets.sum(dim=0) >= 1).all()  # every prompt of the batch was named by some caption
    for row, caption in enumerate(captions):
        named = {words[column] for column in targets[row].nonzero().flatten().tolist()}
        assert named <= set(caption_keywords(caption, VOCABULARY))


def test_multilabel_loss_with_one_keyword_each_is_the_contrastive_loss() -> None:
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(10.0)
    torch.testing.assert_close(
        multilabel_contrastive_loss(image, text, torch.eye(5), scale), contrastive_loss(image, text, scale)
    )


def test_multilabel_loss_prefers_images_near_their_keywords() -> None:
    torch.manual_seed(0)
    prompts = F.normalize(torch.randn(4, 16), dim=-1)
    targets = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 1.0, 0, 1.0]])
    matching = F.normalize(targets @ prompts, dim=-1)
    scale = torch.tensor(10.0)
    assert multilabel_contrastive_loss(matching, prompts, targets, scale) < multilabel_contrastive_loss(
        matching.roll(1, dims=0), prompts, targets, scale
    )


def test_token_pooled_multilabel_loss_takes_each_images_best_token() -> None:
    torch.manual_seed(0)
    prompts = F.normalize(torch.randn(3, 16), dim=-1)
    targets = torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]])
    tokens = F.normalize(torch.randn(2, 5, 16), dim=-1)
    logits = 10.0 * (tokens @ prompts.t()).amax(dim=1)  # (images, keywords): the best-matching token's similarity
    image_to_text = -(targets / targets.sum(1, keepdim=True) * logits.log_softmax(1)).sum(1).mean()
    text_to_image = -(targets.t() / targets.t().sum(1, keepdim=True) * logits.t().log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(
        multilabel_contrastive_loss(tokens, prompts, targets, torch.tensor(10.0)), 0.5 * (image_to_text + text_to_image)
    )


@pytest.mark.parametrize("pooling", ["image", "token"])
def test_keyword_loss_is_trained_and_its_vocabulary_recorded(pooling: str, tiny_world: Path, tmp_path: Path) -> None:
    cfg = tiny_teacher_config()
    cfg.keyword_prompts = 3
    cfg.readout, cfg.keyword_pooling, cfg.text_batchnorm = "token", pooling, pooling == "token"
    train_teacher(tiny_world, tmp_path / "run", cfg, tiny_train_config(steps=2), show_progress=False)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert "car" in config["keywords"] or "fish" in config["keywords"]
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["keywords"] > 0


def test_token_keyword_pooling_needs_the_token_readout() -> None:
    cfg = tiny_teacher_config()
    cfg.keyword_pooling = "token"
    with pytest.raises(ValueError, match="token' readout"):
        MixReorgTeacher(cfg)


def test_keyword_loss_needs_the_keywords() -> None:
    cfg = tiny_teacher_config()
    cfg.keyword_prompts = 3
    model = MixReorgTeacher(cfg)
    with pytest.raises(ValueError, match="keyword prompts"):
        model.training_losses(torch.randn(2, 3, 32, 32), model.tokenize(["a car", "a fish"]))


def test_keyword_prompts_not_captions_set_the_text_statistics() -> None:
    torch.manual_seed(0)
    cfg = tiny_teacher_config()
    cfg.keyword_prompts, cfg.readout, cfg.keyword_pooling, cfg.text_batchnorm = 3, "token", "token", True
    model = MixReorgTeacher(cfg)
    captions = model.tokenize(["a car on the sand", "a fish in the water"])
    model.encode_text(captions, track_stats=False)
    assert torch.equal(model.text_norm.running_mean, torch.zeros(cfg.embed_dim))
    prompts = model.keyword_prompt_tokens(["car", "fish", "sand", "water"])
    targets = torch.tensor([[1.0, 0, 1.0, 0], [0, 1.0, 0, 1.0]])
    model.training_losses(torch.randn(2, 3, 32, 32), captions, (prompts, targets))
    with torch.no_grad():
        projected = model.text_proj(model.text_encoder(prompts))
    torch.testing.assert_close(model.text_norm.running_mean, model.text_norm.momentum * projected.mean(0))
