"""Which compute layers of a quantized graph stayed in float: recorded in `metadata.json` (`quantization.float_kept`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from torch import nn

from ..quantize import float_kept, pt2e_float_modules

_PT2E_COMPUTE = ("conv2d", "linear", "matmul", "bmm", "scaled_dot_product_attention")
_ONNX_COMPUTE = ("Conv", "MatMul", "Gemm")


def _summary(layers: list[tuple[str, str]]) -> list[str]:
    """'op: where' entries, with repeats of one op in one place counted."""
    counts = Counter(layers)
    return [f"{op}: {where}" + (f" (x{n})" if n > 1 else "") for (op, where), n in counts.items()]


def pt2e_float_layers(graph: nn.Module) -> list[str]:
    """Convolutions, linear layers and matmuls of a PT2E-quantized `torch.fx.GraphModule` none of whose inputs comes
    from a dequantize node (they compute in float)."""
    layers = []
    for node in graph.graph.nodes:
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if node.op != "call_function" or op not in _PT2E_COMPUTE:
            continue
        inputs = [arg for arg in node.args if hasattr(arg, "target")]
        if not any("dequantize" in str(arg.target) for arg in inputs):
            stack = node.meta.get("nn_module_stack") or {}
            where = next(reversed(stack.values()))[0] if stack else node.name
            layers.append((op, where or "network"))
    return _summary(layers)


def pt2e_float_kept(graph: nn.Module, output: str) -> list[str]:
    """`quantization.float_kept` of a PT2E-quantized graph (ExecuTorch's and Core ML's int8 routes): why parts stay
    in float (`quantize.float_kept`), then the compute layers that did (`pt2e_float_layers`)."""
    return float_kept(output, pt2e_float_modules(graph)) + pt2e_float_layers(graph)


def onnx_float_layers(model: Any) -> list[str]:
    """Conv / MatMul / Gemm nodes of a Q/DQ ONNX model none of whose inputs comes from a DequantizeLinear node."""
    dequantized = {output for node in model.graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    layers = [(node.op_type, node.name) for node in model.graph.node
              if node.op_type in _ONNX_COMPUTE and not dequantized.intersection(node.input)]
    return _summary(layers)
