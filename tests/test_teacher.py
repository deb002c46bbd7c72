import pytest
import torch

from conftest import tiny_teacher_config
from mixreorg_edge.head import VocabularyHead
from mixreorg_edge.teacher.ablation import VARIANTS, apply_variant
from mixreorg_edge.teacher.model import MixReorgTeacher
from mixreorg_edge.teacher.presets import get_preset
from mixreorg_edge.vocab import build_vocabulary


@pytest.mark.parametrize("readout", ["group", "token"])
@pytest.mark.parametrize("variant", [name for name in VARIANTS if "keyword_pooling" not in VARIANTS[name]])
def test_every_variant_trains_one_step(variant: str, readout: str) -> None:
    torch.manual_seed(0)
    cfg = apply_variant(tiny_teacher_config(), variant)
    cfg.readout = readout
    model = MixReorgTeacher(cfg)
    images = torch.randn(4, 3, 32, 32)
    tokens = model.tokenize(["a photo of a car", "a tree on grass", "a fish in water", "a sun in the sky"])
    losses = model.training_losses(images, tokens)
    expected = {"loss", "contrastive"} | ({"segmentation"} if cfg.mixing.enabled else set())
    expected |= {"restoration"} if VARIANTS[variant].get("restoration") else set()
    assert set(losses) == expected
    losses["loss"].backward()
    grads = [p.grad for p in model.image_encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_groupvit_baseline_pools_keywords_over_the_image_embedding() -> None:
    cfg, _ = get_preset("toy")
    assert cfg.keyword_pooling == "token"
    apply_variant(cfg, "baseline-groupvit")
    assert cfg.keyword_pooling == "image" and not cfg.mixing.enabled and not hasattr(cfg.mixing, "keyword_pooling")
    vit_s, _ = get_preset("vit-s")  # no keyword loss: the variant would be the plain baseline
    with pytest.raises(ValueError, match="does not have"):
        apply_variant(vit_s, "baseline-groupvit")


def test_toy_preset_is_the_contextual_rung_and_vit_s_the_full_design() -> None:
    """`toy` trains the ablation's `+contextual` variant after the stem (the equal-time winner on the tuning split);
    `vit-s` is full MixReorg."""
    toy, _ = get_preset("toy")
    assert toy.to_dict() == apply_variant(get_preset("toy")[0], "+contextual").to_dict()
    assert toy.to_dict() != apply_variant(get_preset("toy")[0], "full").to_dict()
    vit_s, _ = get_preset("vit-s")
    assert vit_s.to_dict() == apply_variant(get_preset("vit-s")[0], "full").to_dict()


def test_group_readout_gives_each_token_its_most_assigned_segment() -> None:
    """GroupViT's one-hot readout: a token carries exactly the embedding of the segment it is assigned to most."""
    from mixreorg_edge.teacher.grouping import compose_assignments

    torch.manual_seed(1)  # an initialisation whose tokens use more than one segment
    cfg = tiny_teacher_config()
    cfg.readout = "group"
    model = MixReorgTeacher(cfg).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = model.encode_dense(images).flatten(2).transpose(1, 2)  # (B, L, E)
        grouped = model.image_encoder(images)
        segments = model.segment_embeddings(grouped)  # (B, G, E)
        owner = compose_assignments(grouped.soft).argmax(-1)  # (B, L)
    assert owner.unique().numel() > 1  # more than one segment in use, or the check below says little
    assert torch.equal(dense, torch.gather(segments, 1, owner[..., None].expand(-1, -1, segments.shape[-1])))


def test_context_layers_come_from_stage_one_budget() -> None:
    flat = MixReorgTeacher(tiny_teacher_config(context_depth=0))
    deep = MixReorgTeacher(tiny_teacher_config(context_depth=1))
    assert len(flat.image_encoder.blocks_in_order()) == len(deep.image_encoder.blocks_in_order())
    assert len(deep.image_encoder.context_blocks) == 1


@pytest.mark.parametrize("variant", ["+contextual", "full"])
def test_all_of_stage_one_can_be_context(variant: str) -> None:
    """context_depth = stage 1's depth (the ablation's deepest contextual rung): no stage-1 layer runs after mixing,
    the group tokens meet the patches in the grouping block; one more is refused."""
    cfg = apply_variant(tiny_teacher_config(), variant)
    cfg.mixing.context_depth = cfg.image.depths[0]
    model = MixReorgTeacher(cfg)
    assert not model.image_encoder.first_stage.blocks
    tokens = model.tokenize(["a photo of a car", "a tree on grass", "a fish in water", "a sun in the sky"])
    losses = model.training_losses(torch.randn(4, 3, 32, 32), tokens)
    losses["loss"].backward()
    cfg.mixing.context_depth += 1
    with pytest.raises(ValueError, match="context_depth must be in"):
        MixReorgTeacher(cfg)


@pytest.mark.parametrize("stem", ["conv", "resnet", "patch"])
@pytest.mark.parametrize("readout", ["group", "token"])
def test_dense_embeddings_follow_the_token_grid(readout: str, stem: str) -> None:
    cfg = tiny_teacher_config()
    cfg.readout = readout
    cfg.image.stem, cfg.image.stem_channels = stem, (8, 16, 16)
    model = MixReorgTeacher(cfg).eval()
    with torch.no_grad():
        assert model.encode_dense(torch.randn(2, 3, 32, 32)).shape == (2, 32, 4, 4)
        assert model.encode_dense(torch.randn(1, 3, 48, 32)).shape == (1, 32, 6, 4)


def test_head_applies_the_background_rule() -> None:
    model = MixReorgTeacher(tiny_teacher_config()).eval()
    vocabulary = build_vocabulary(model, ["background", "car", "tree"], ["sky", "grass"], templates="simple")
    head = VocabularyHead(vocabulary)
    dense = torch.nn.functional.normalize(torch.randn(1, 32, 3, 3), dim=1)
    scores = head(dense)
    probs = (vocabulary.logit_scale * torch.einsum("ve,behw->bvhw", vocabulary.embeddings, dense)).softmax(1)
    assert torch.allclose(scores[:, 0], probs[:, 2:].sum(1), atol=1e-6)  # background = mass of its words
    assert torch.allclose(scores[:, 1:], probs[:, :2], atol=1e-6)


def test_stem_configuration_errors_are_clear() -> None:
    cfg = tiny_teacher_config()
    cfg.image.stem, cfg.image.stem_channels = "resnet", (8, 16)
    with pytest.raises(ValueError, match="needs log2"):
        MixReorgTeacher(cfg)
    cfg.image.stem = "hourglass"
    with pytest.raises(ValueError, match="unknown stem"):
        MixReorgTeacher(cfg)


def test_unknown_preset_and_variant_are_refused() -> None:
    with pytest.raises(ValueError, match="toy"):
        get_preset("huge")
    with pytest.raises(ValueError, match="baseline"):
        apply_variant(tiny_teacher_config(), "nope")


def test_vit_s_preset_is_the_paper_size() -> None:
    cfg, _ = get_preset("vit-s")
    assert (cfg.image.image_size, cfg.image.patch_size, cfg.image.width, cfg.image.heads) == (224, 16, 384, 6)
    assert cfg.image.depths == (6, 3, 3) and cfg.image.group_tokens == (64, 8)
    assert (cfg.text.layers, cfg.text.width, cfg.embed_dim) == (12, 256, 256)


def test_toy_preset_evaluates_at_its_training_scale() -> None:
    cfg, _ = get_preset("toy")
    assert cfg.eval.short_side == cfg.eval.window == cfg.image.image_size


def test_init_image_loads_a_timm_vit(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    from mixreorg_edge.teacher.init import load_vit_into_encoder

    cfg = tiny_teacher_config()
    cfg.image.stem = "patch"
    model = MixReorgTeacher(cfg)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, embed_dim=32, depth=4, num_heads=2,
                            patch_size=8, img_size=32)
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / "vit.safetensors")
    loaded = load_vit_into_encoder(model.image_encoder, tmp_path / "vit.safetensors")
    assert "stem.weight" in loaded and "pos_embed" in loaded
    first = model.image_encoder.blocks_in_order()[0]
    assert torch.equal(first.attn.qkv.weight, vit.blocks[0].attn.qkv.weight)


def test_text_batchnorm_keeps_prompts_apart_and_follows_the_mode() -> None:
    torch.manual_seed(0)
    plain, normed = tiny_teacher_config(), tiny_teacher_config()
    normed.text_batchnorm = True
    prompts = [f"a photo of a {word}." for word in ("car", "fish", "tree", "boat", "house", "sun")]
    cosines = {}
    for name, cfg in {"plain": plain, "normed": normed}.items():
        torch.manual_seed(0)
        model = MixReorgTeacher(cfg)
        text = model.encode_text(model.tokenize(prompts))
        cosines[name] = (text @ text.t())[~torch.eye(len(prompts), dtype=torch.bool)].mean().item()
    assert cosines["plain"] > 0.9 > 0.5 > cosines["normed"]  # the shared direction is gone
    running = model.text_norm.running_mean.clone()
    assert not torch.equal(running, torch.zeros_like(running))  # training mode updated the statistics
    lone = model.encode_text(model.tokenize(["a photo of a car."]))  # no batch statistics: uses the running ones
    assert torch.isfinite(lone).all() and torch.equal(model.text_norm.running_mean, running)
    model.eval()
    batch = model.encode_text(model.tokenize(prompts))
    assert torch.allclose(model.encode_text(model.tokenize(prompts[:1])), batch[:1], atol=1e-6)  # per-text at test time


@pytest.mark.parametrize("fraction, mixed", [(1.0, 4), (0.5, 2)])
def test_mixed_fraction_mixes_only_the_first_groups(fraction: float, mixed: int) -> None:
    torch.manual_seed(0)
    model = MixReorgTeacher(tiny_teacher_config(fraction=fraction))
    images = torch.randn(4, 3, 32, 32, requires_grad=True)
    tokens = model.tokenize(["a photo of a car", "a tree on grass", "a fish in water", "a sun in the sky"])
    losses = model.training_losses(images, tokens)
    mixed_branches = losses["segmentation"] + losses["restoration"]
    (grad,) = torch.autograd.grad(mixed_branches, images)
    touched = [bool(grad[n].abs().sum() > 0) for n in range(4)]
    assert touched == [n < mixed for n in range(4)]


def test_restoration_regroups_with_group_tokens_that_went_through_stage_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a mixing plan that moves nothing, the restored images are the original images processed again, so
    restoration must rebuild the original branch exactly: its group tokens too went through the stage-1 layers beside
    the patches (raw group tokens entering the grouping block would not)."""
    import mixreorg_edge.teacher.model as teacher_model
    from mixreorg_edge.teacher.mixing import MixPlan

    def identity_plan(batch: int, grid: tuple[int, int], images: int, block: int = 1) -> MixPlan:
        return MixPlan(torch.arange(batch)[:, None].expand(batch, grid[0] * grid[1]))

    monkeypatch.setattr(teacher_model, "make_plan", identity_plan)
    torch.manual_seed(0)
    model = MixReorgTeacher(tiny_teacher_config(progressive=False)).eval()  # eval: no Gumbel noise
    images = torch.randn(4, 3, 32, 32)
    tokens = model.tokenize(["a photo of a car", "a tree on grass", "a fish in water", "a sun in the sky"])
    with torch.no_grad():
        losses = model.training_losses(images, tokens)
    assert torch.allclose(losses["restoration"], losses["contrastive"], rtol=0, atol=1e-6)


def test_last_rows_is_the_block_on_its_last_queries() -> None:
    """The restored group tokens' stage-1 layers compute only their own rows: the same numbers as the whole block."""
    from timm.models.vision_transformer import Block

    from mixreorg_edge.teacher.image_encoder import last_rows

    torch.manual_seed(0)
    block, joint = Block(32, 2), torch.randn(3, 20, 32)
    assert torch.allclose(last_rows(block, joint, 4), block(joint)[:, -4:], rtol=0, atol=1e-6)
