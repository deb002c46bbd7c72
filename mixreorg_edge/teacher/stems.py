"""Image stems: (B, 3, H, W) pixels -> (B, width, H / patch, W / patch) tokens, token (m, n) standing for the patch
of pixels [patch * m, patch * (m + 1)) x [patch * n, patch * (n + 1)).

Everything downstream assumes that correspondence: pixel mixing labels a token by its patch (`mixing.py`) and the
evaluation upsamples token maps with half-pixel centres (`zeroshot.py`). A token's receptive field must therefore
be centred on its patch's centre, `patch * m + (patch - 1) / 2`. A stride-2 convolution with an even kernel of
size 2p + 2 and padding p keeps that centre; the odd 3x3 kernels of the stems recorded before 2026-12-06
(`centred=False`, the *legacy* geometry) centre token m on pixel `patch * m` instead, half a patch up and to the left.
"""

from __future__ import annotations

from torch import nn

from .config import ImageEncoderConfig

STEMS = ("patch", "conv", "resnet")


def _stride2_kernel(centred: bool) -> int:
    """Kernel of every stride-2 convolution (padding 1): 4 keeps receptive fields on their patch, 3 is the legacy."""
    return 4 if centred else 3


def _stride2_steps(patch: int) -> int:
    steps = patch.bit_length() - 1
    if 2**steps != patch or steps < 2:
        raise ValueError(f"a conv or resnet stem needs a power-of-two patch size >= 4, got {patch}")
    return steps


def conv_stem(width: int, patch: int, centred: bool = True) -> nn.Sequential:
    """Overlapping stride-2 convolutions (GELU between them) down to stride `patch`."""
    steps = _stride2_steps(patch)
    kernel = _stride2_kernel(centred)
    channels = [3] + [width // 2 ** (steps - i) for i in range(1, steps)] + [width]
    layers: list[nn.Module] = []
    for i in range(steps):
        layers.append(nn.Conv2d(channels[i], channels[i + 1], kernel, stride=2, padding=1))
        if i < steps - 1:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def resnet_stem(width: int, patch: int, channels: tuple[int, ...], centred: bool = True) -> nn.Sequential:
    """Per stride-2 scale a strided and a plain 3x3 conv-BN-ReLU with `channels[i]` channels, then 1x1 to `width`."""
    if 2 ** len(channels) != patch:
        raise ValueError(f"a resnet stem for patch size {patch} needs log2({patch}) stem_channels, got {channels}")
    layers: list[nn.Module] = []
    previous = 3
    for out in channels:
        layers += [_conv_bn_relu(previous, out, _stride2_kernel(centred), 2), _conv_bn_relu(out, out, 3, 1)]
        previous = out
    return nn.Sequential(*layers, nn.Conv2d(previous, width, 1))


def build_stem(cfg: ImageEncoderConfig) -> nn.Module:
    """The stem `cfg.stem` names, with `cfg.stem_centred`'s geometry (a linear patchify is centred either way)."""
    if cfg.stem == "conv":
        return conv_stem(cfg.width, cfg.patch_size, cfg.stem_centred)
    if cfg.stem == "patch":
        return nn.Conv2d(3, cfg.width, cfg.patch_size, stride=cfg.patch_size)
    if cfg.stem == "resnet":
        return resnet_stem(cfg.width, cfg.patch_size, tuple(cfg.stem_channels), cfg.stem_centred)
    raise ValueError(f"unknown stem {cfg.stem!r}; choose {', '.join(repr(s) for s in STEMS)}")
