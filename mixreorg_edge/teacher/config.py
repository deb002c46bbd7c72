"""Teacher architecture and MixReorg configuration, as plain dataclasses (configs are data).

Every MixReorg component can be switched off here; that is how the ablation runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..configs import config_from_dict
from ..refinement import MaskRefinement


@dataclass
class ImageEncoderConfig:
    """GroupViT-style image encoder: patch tokens + learnable group tokens, grouping stages."""

    image_size: int = 224
    patch_size: int = 16
    # "patch": one linear patchify conv (ViT); "conv": 3x3 stride-2 conv stack (overlapping); "resnet": per stride-2
    # scale two 3x3 conv-BN-ReLU layers with `stem_channels[i]` channels, then a 1x1 projection to `width` (a hybrid
    # ViT stem: a convolutional shape prior for encoders trained from scratch on little data).
    stem: str = "patch"
    stem_channels: tuple[int, ...] = ()
    # "conv" / "resnet": every token's receptive field centred on its patch (even 4x4 stride-2 kernels, stems.py).
    # False: the legacy odd 3x3 kernels, centred half a patch up-left; a config recorded without this key (every run
    # made before 2026-12-06, the shipped teacher among them) means False, so old runs load and score as they did.
    stem_centred: bool = True
    width: int = 384
    heads: int = 6
    depths: tuple[int, ...] = (6, 3, 3)  # transformer layers per stage; stage i < len(groups) ends in a grouping block
    group_tokens: tuple[int, ...] = (64, 8)  # learnable group tokens entering each grouping stage
    output_groups: tuple[int, ...] = (64, 8)  # segments leaving each grouping block
    hard_assignment: bool = True
    gumbel: bool = True
    gumbel_tau: float = 1.0


@dataclass
class TextEncoderConfig:
    """CLIP-style causal text transformer trained from scratch (CLIP BPE tokenizer, bundled with open_clip)."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 256
    heads: int = 4
    layers: int = 12
    token_init_std: float = 0.02
    # "eot": the end-of-text token's feature (CLIP, GroupViT). "mean": the mean over the text's tokens; a small
    # encoder trained from scratch with "eot" first learns only the words next to the end of the caption.
    pooling: str = "eot"


@dataclass
class MixingConfig:
    """MixReorg's training-time branches. With `enabled=False` the model trains as plain GroupViT (image-text contrastive).

    - `images`: how many images are mixed together (each mixed image takes every token position from one of them).
    - `block`: side, in tokens, of the square blocks that are mixed (1 = single patches).
    - `contextual`: mix *tokens* after each image was embedded (and `context_depth` transformer layers ran) on its own
      image; otherwise raw pixel patches are mixed before the stem (the naive variant).
    - `progressive`: at every stage-1 layer after mixing, each mixed image receives a zero-initialised projection of the
      mean original-image feature of its mix group (global context, identical for all its tokens, so no token learns its
      source from it).
    - `restoration`: mixed stage-1 tokens are put back in source order and grouped again; a contrastive loss ties the
      restored image to its caption.
    - `fraction`: the share of the batch's mixing groups that run the mixed (and restoration) branch each step, the
      first ones (the batch is shuffled); below 1 a step costs less, so a time budget buys more steps.
    """

    enabled: bool = True
    images: int = 4
    block: int = 1
    contextual: bool = True
    context_depth: int = 0
    progressive: bool = True
    restoration: bool = True
    seg_weight: float = 1.0
    restore_weight: float = 1.0
    contrastive_weight: float = 1.0
    fraction: float = 1.0


@dataclass
class EvalConfig:
    """Zero-shot segmentation protocol (GroupViT's): short side resize, sliding window, template ensemble; and the
    mask refinement of the logits (refinement.py; 0 iterations = off, GroupViT's protocol)."""

    short_side: int = 448
    window: int = 448
    stride: int = 224
    templates: str = "ensemble"
    refine_iterations: int = 0
    refine_dilations: tuple[int, ...] = MaskRefinement().dilations


@dataclass
class TeacherConfig:
    """Everything needed to rebuild a teacher model."""

    preset: str = "vit-s"
    embed_dim: int = 256
    # Dense readout, used by the mixed-segmentation loss and at test time. "group": a token's embedding is its
    # segment's (GroupViT). "token": each stage-1 output token projected on its own (grouping still makes the
    # image embeddings of the contrastive losses); at toy scale the grouping collapses early and "group" starves the
    # segmentation loss of per-token signal.
    readout: str = "group"
    # GroupViT's multi-label contrastive loss: the original image also matches "a photo of a {keyword}." for up to
    # `keyword_prompts` keywords of its caption among all distinct keyword prompts of the batch (0 = off). Keywords
    # are the `keyword_vocabulary` most frequent content words of the training captions (data.keywords).
    keyword_prompts: int = 0
    # What matches a keyword prompt: "image", the image embedding (GroupViT's); "token", the image's best-matching
    # stage-1 token (the token readout's embedding), so a small thing's few tokens carry its keyword.
    keyword_pooling: str = "image"
    keyword_weight: float = 1.0
    keyword_vocabulary: int = 64
    projection_layers: int = 2
    # BatchNorm (no affine; running statistics at test time) on the projected text embedding before L2
    # normalisation. A text tower trained from scratch maps every prompt to nearly one direction at init ("a photo
    # of a car." vs "... fish.": cosine 0.996), so image-text losses give the image side no signal to tell the
    # words apart and the text side none to separate them: both stay collapsed. Centring and scaling each
    # dimension over the batch's texts removes the shared component and keeps the words apart. The running
    # statistics come from the keyword prompts when the keyword loss is on (they look like test-time prompts), else
    # from the captions.
    text_batchnorm: bool = False
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TeacherConfig":
        """A recorded config; one without `image.stem_centred` was made with the legacy stem."""
        image = data.get("image", {})
        if "stem_centred" not in image:
            data = {**data, "image": {**image, "stem_centred": False}}
        return config_from_dict(cls, data)
