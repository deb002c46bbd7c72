import pytest
import torch
from torch import nn

from mixreorg_edge.distill.student import DenseStudent, StudentConfig
from mixreorg_edge.distill.students import FAMILIES
from mixreorg_edge.export.prepare import fold_batchnorms, prepare_for_inference


def _randomise_batchnorms(model: nn.Module) -> None:
    """Non-trivial running statistics and affine terms, so folding is actually exercised."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(size, generator=generator) - 0.5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prepared_student_folds_every_batchnorm_and_keeps_its_output(family: str) -> None:
    torch.manual_seed(0)
    model = DenseStudent(StudentConfig(student=family, embed_dim=32)).eval()
    _randomise_batchnorms(model)
    x = torch.randn(1, 3, 64, 64)
    prepared = prepare_for_inference(model, x)
    assert not any(isinstance(module, nn.BatchNorm2d) for module in prepared.modules())
    assert any(isinstance(module, nn.BatchNorm2d) for module in model.modules())  # the original is untouched
    with torch.no_grad():
        torch.testing.assert_close(prepared(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-4, rtol=1e-4)


class _NormBeforeConv(nn.Module):
    """Registers conv then norm, but normalises the *input*: folding by registration order would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.norm(x))


def test_a_rewrite_that_changes_the_output_is_refused() -> None:
    model = _NormBeforeConv().eval()
    _randomise_batchnorms(model)
    with pytest.raises(RuntimeError, match="differs from the original"):
        prepare_for_inference(model, torch.randn(1, 3, 8, 8))


def test_folding_needs_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorms(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)))


class _Multiply(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_the_parity_check_is_relative_to_the_output_scale() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    # Raw features of large magnitude (an untrained backbone's last stage reaches ~300): the fold's float rounding
    # is far above 1e-3 in absolute terms, not relative to the output.
    large = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), _Multiply(1e5)).eval()
    _randomise_batchnorms(large)
    prepare_for_inference(large, x)
    changed = nn.Sequential(_NormBeforeConv(), _Multiply(1e5)).eval()
    _randomise_batchnorms(changed)
    with pytest.raises(RuntimeError, match="differs from the original"):  # a real change is still refused
        prepare_for_inference(changed, x)
