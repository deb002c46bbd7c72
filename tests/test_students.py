import functools
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mixreorg_edge.distill.student import DenseStudent, EmbeddingModel, SegmentationModel, StudentConfig
from mixreorg_edge.distill.students import FAMILIES, StudentSpec, create_backbone, parse_student
from mixreorg_edge.vocab import Vocabulary

E = 32
SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """64x64 graphs are too small to gain from intra-op threads; one thread is faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    torch.manual_seed(0)
    return Vocabulary(
        label_set=["background", "car", "tree"],
        background_words=["sky", "grass"],
        embeddings=F.normalize(torch.randn(4, E), dim=-1),
        logit_scale=50.0,
    )


@functools.cache
def student(family: str) -> DenseStudent:
    """One eval-mode student per family, shared by the tests (building is the slow part)."""
    torch.manual_seed(0)
    return DenseStudent(StudentConfig(student=family, embed_dim=E)).eval()


def test_parse_student_defaults_and_sizes() -> None:
    assert parse_student("mobilevit") == StudentSpec("mobilevit", "xxs", "mobilevit_xxs")
    assert parse_student("mobilevit:s") == StudentSpec("mobilevit", "s", "mobilevit_s")
    assert parse_student("efficientvit:b1").timm_name == "efficientvit_b1"
    assert str(parse_student("mobilenetv4")) == "mobilenetv4:conv_small"
    available = set(timm.list_models())
    assert all(name in available for sizes in FAMILIES.values() for name in sizes.values())


@pytest.mark.parametrize("spec", ["foo", "mobilevit:huge", "mobilevit:", ""])
def test_unknown_student_lists_every_choice(spec: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_student(spec)
    message = str(error.value)
    assert f"unknown student {spec!r}" in message
    assert "mobilevit[:xxs|xs|s]" in message
    for family, sizes in FAMILIES.items():
        assert f"{family}[:{'|'.join(sizes)}]" in message


def test_config_round_trip() -> None:
    cfg = StudentConfig(student="repvit:m1_0", embed_dim=128, decoder_width=32, image_size=320)
    assert StudentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown StudentConfig keys"):
        StudentConfig.from_dict({**cfg.to_dict(), "width": 3})


@pytest.mark.parametrize("family", list(FAMILIES))
def test_student_embeddings_are_unit_norm_at_stride_8(family: str) -> None:
    model = student(family)
    with torch.no_grad():
        dense = model.encode_dense(torch.randn(1, 3, SIZE, SIZE))
    assert model.embed_dim == E
    assert dense.shape == (1, E, SIZE // 8, SIZE // 8)
    torch.testing.assert_close(dense.norm(dim=1), torch.ones(1, SIZE // 8, SIZE // 8))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_segmentation_model_exports(family: str, vocabulary: Vocabulary) -> None:
    model = SegmentationModel(student(family), vocabulary, output="labels").eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        eager = model(x)
        exported = program.module()(x)
    assert eager.shape == (1, SIZE, SIZE) and eager.dtype == torch.int64
    assert torch.equal(exported, eager)


@pytest.mark.parametrize("background_bias", [0.0, 1.5])
def test_baked_head_equals_explicit_product(vocabulary: Vocabulary, background_bias: float) -> None:
    vocabulary = replace(vocabulary, background_bias=background_bias)
    dense_model = student("mobilevit")
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        scores = SegmentationModel(dense_model, vocabulary, output="scores").eval()(x)
        dense = F.interpolate(dense_model.encode_dense(x), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    logits = vocabulary.logit_scale * torch.einsum("ve,behw->bvhw", vocabulary.embeddings, dense)
    logits[:, 2:] += background_bias  # the background words' rows
    probs = logits.softmax(dim=1)  # rows: car, tree, sky, grass
    expected = torch.stack([probs[:, 2] + probs[:, 3], probs[:, 0], probs[:, 1]], dim=1)  # background, car, tree
    assert scores.shape == (1, 3, SIZE, SIZE)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-4)


def test_embedding_model_is_the_dense_map() -> None:
    dense_model = student("mobilevit")
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(EmbeddingModel(dense_model)(x), dense_model.encode_dense(x))
    with pytest.raises(TypeError, match="not a DenseModel"):
        EmbeddingModel(torch.nn.Identity())


def test_backbone_weights_load_from_full_timm_checkpoint(tmp_path: Path) -> None:
    spec = parse_student("efficientvit")
    full = timm.create_model(spec.timm_name, pretrained=False)
    path = tmp_path / "full.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(path))
    with pytest.warns(UserWarning, match=r"0 missing keys .* unexpected keys \['head\."):
        backbone = create_backbone(spec, path)
    loaded = backbone.state_dict()
    torch.testing.assert_close(loaded["stem_in_conv.conv.weight"], full.state_dict()["stem.in_conv.conv.weight"])
    torch.testing.assert_close(loaded["stages_3.blocks.0.main.inverted_conv.conv.weight"],
                               full.state_dict()["stages.3.blocks.0.main.inverted_conv.conv.weight"])


def test_backbone_weights_round_trip_and_refusals(tmp_path: Path) -> None:
    spec = parse_student("efficientvit")
    source = create_backbone(spec)
    own = tmp_path / "own.pth"
    torch.save(source.state_dict(), own)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        target = create_backbone(spec, own)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(1)}, unrelated)
    with pytest.raises(ValueError, match="no key"):
        create_backbone(spec, unrelated)
    with pytest.raises(ValueError, match="shape mismatches"):
        create_backbone(parse_student("efficientvit:b1"), own)
