"""NNCF post-training int8, with the quantizer of the runtime it is for (one engine, three routes):

* PT2E (`nncf.experimental.torch.fx.quantize_pt2e`) with ExecuTorch's `XNNPACKQuantizer`: per-channel symmetric
  int8 weights, per-tensor int8 activations. ExecuTorch lowers it to XNNPACK's int8 kernels; Core ML converts the
  same quantize/dequantize graph into a W8A8 mlprogram (coremltools' own PT2E quantizer does not import with
  torch 2.14: it needs the removed `torch.ao.quantization.quantizer`).
* `nncf.quantize` on the ONNX model (Q/DQ, what ONNX Runtime and TensorRT's explicit int8 take) or on the OpenVINO
  model, optionally `nncf.quantize_with_accuracy_control` with the toolkit's mIoU as the metric.

Only the dense network is quantized: the vocabulary head (1x1 convolution), the upsampling, the softmax and the
background rule stay in float (`FLOAT_HEAD`), the PT2E route by quantizing the network's graph alone, the ONNX /
OpenVINO route by an ignored scope. So do the modules in `FLOAT_MODULES`, which lose too much accuracy in int8."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics import SegmentationMetric

FLOAT_HEAD = ("vocabulary head (1x1 convolution)", "bilinear upsampling", "softmax / background rule")
PT2E_QUANTIZER = "executorch XNNPACKQuantizer (symmetric, per-channel weights, per-tensor activations)"
# module classes (qualified names) every int8 route keeps in float, and why (benchmarks/RESULTS.md, 2026-12-07)
FLOAT_MODULES = {
    "timm.models.efficientvit_mit.LiteMLA": "EfficientViT's ReLU linear attention (timm LiteMLA): with its q, k, v in "
    "int8 the sum it normalises by is too coarse (OpenVINO labels agreed with PyTorch on 93.5 % of pixels at 448 px)",
}


def float_modules_in(class_names: Iterable[str]) -> list[str]:
    """The `FLOAT_MODULES` among `class_names` (the classes a graph node was traced inside)."""
    return [name for name in FLOAT_MODULES if any(name in class_name for class_name in class_names)]


def float_kept(output: str, modules: Iterable[str]) -> list[str]:
    """`quantization.float_kept`'s reasons, alike on every int8 route: the float head (unless the graph's output is
    the embeddings) and, for each of the `FLOAT_MODULES` in `modules`, why it stays float."""
    return (list(FLOAT_HEAD) if output != "embeddings" else []) + [FLOAT_MODULES[name] for name in sorted(set(modules))]


def _traced_inside(node: torch.fx.Node) -> list[str]:
    """Qualified class names of the modules an exported FX node was traced inside."""
    return [kind if isinstance(kind, str) else f"{kind.__module__}.{kind.__qualname__}"
            for _, kind in (node.meta.get("nn_module_stack") or {}).values()]


def pt2e_float_modules(graph: torch.fx.GraphModule) -> set[str]:
    """The `FLOAT_MODULES` an exported (PT2E) graph's nodes were traced inside."""
    return {name for node in graph.graph.nodes for name in float_modules_in(_traced_inside(node))}


def _quiet_nncf() -> Any:
    import nncf

    logging.getLogger("nncf").setLevel(logging.ERROR)
    return nncf


def pt2e_int8(network: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]) -> nn.Module:
    """The network (images -> tensor) as an NNCF-calibrated PT2E graph with XNNPACK's int8 quantize/dequantize
    pairs (a `torch.fx.GraphModule`, float in, float out); `FLOAT_MODULES` are left unannotated."""
    nncf = _quiet_nncf()
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from nncf.experimental.torch.fx import quantize_pt2e

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(lambda node: not float_modules_in(_traced_inside(node)))
    graph = _without_higher_order_ops(torch.export.export(network.eval(), (example,))).module()
    dataset = nncf.Dataset(list(calibration))
    return quantize_pt2e(graph, quantizer, dataset, subset_size=len(calibration), fast_bias_correction=True)


@dataclass
class AccuracyControl:
    """`--max-drop`: NNCF keeps layers in float until the mIoU on `pairs` (input, mask at the input size) drops by at
    most `max_drop` points. `num_classes` is the label set's size; `labels_of` turns a model output into labels."""

    pairs: list[tuple[torch.Tensor, np.ndarray]]
    max_drop: float
    num_classes: int
    labels_of: Callable[[np.ndarray], np.ndarray]

    def miou(self, run: Callable[[np.ndarray], np.ndarray], pairs: Any) -> float:
        """mIoU (points) of `run` (input array -> output array) over `pairs`."""
        metric = SegmentationMetric(self.num_classes)
        for inputs, mask in pairs:
            metric.update(torch.from_numpy(self.labels_of(run(inputs.numpy()))[0]), torch.from_numpy(mask))
        return metric.compute()["miou"]


def _nncf_quantize(model: Any, calibration: Sequence[torch.Tensor], to_input: Callable[[torch.Tensor], Any],
                   ignored: Sequence[str], accuracy: AccuracyControl | None,
                   runner: Callable[[Any], Callable[[np.ndarray], np.ndarray]]) -> Any:
    """`nncf.quantize` (or, with `accuracy`, `nncf.quantize_with_accuracy_control`, validating with `runner(model)`)
    of an ONNX or OpenVINO model; `to_input` maps a preprocessed tensor to the model's input."""
    nncf = _quiet_nncf()
    dataset = nncf.Dataset(list(calibration), to_input)
    common = {"model_type": nncf.ModelType.TRANSFORMER, "subset_size": len(calibration),
              "ignored_scope": nncf.IgnoredScope(names=list(ignored), validate=False)}
    if accuracy is None:
        return nncf.quantize(model, dataset, **common)
    validation = nncf.Dataset(accuracy.pairs, lambda pair: to_input(pair[0]))
    return nncf.quantize_with_accuracy_control(
        model, dataset, validation, validation_fn=lambda candidate, pairs: accuracy.miou(runner(candidate), pairs),
        max_drop=accuracy.max_drop, drop_type=nncf.DropType.ABSOLUTE, **common)


def onnx_int8(model: Any, input_name: str, calibration: Sequence[torch.Tensor], ignored: Sequence[str],
              accuracy: AccuracyControl | None = None) -> Any:
    """An `onnx.ModelProto` quantized by NNCF into Q/DQ int8 (`ignored` node names stay float)."""
    import onnxruntime

    def runner(candidate: Any) -> Callable[[np.ndarray], np.ndarray]:
        session = onnxruntime.InferenceSession(candidate.SerializeToString(), providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {input_name: x})[0]

    return _nncf_quantize(model, calibration, lambda x: {input_name: x.numpy()}, ignored, accuracy, runner)


def _without_higher_order_ops(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`program` with regions such as timm EfficientViT's `torch.autocast(enabled=False)` (exported as a
    higher-order op on a sub-graph, which NNCF's FX graph builder cannot read) inlined by `run_decompositions({})`;
    unchanged when it has none."""
    graph = program.graph_module
    has_subgraph = any(node.op == "get_attr" and isinstance(getattr(graph, str(node.target), None), torch.fx.GraphModule)
                       for node in graph.graph.nodes)
    return program.run_decompositions({}) if has_subgraph else program


def openvino_int8(model: Any, calibration: Sequence[torch.Tensor], ignored: Sequence[str],
                  accuracy: AccuracyControl | None = None) -> Any:
    """An `openvino.Model` quantized by NNCF (`ignored` op names stay float)."""
    return _nncf_quantize(model, calibration, lambda x: x.numpy(), ignored, accuracy,
                          lambda compiled: (lambda x: compiled(x)[0]))
