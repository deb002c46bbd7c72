"""ONNX (opset 18, the dynamo exporter): fp32, fp16 (float16 compute, float32 input and output) and int8 (NNCF Q/DQ:
what ONNX Runtime runs in int8 and what TensorRT takes for explicit int8). Run here with ONNX Runtime's CPU provider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .target import ConversionJob, ExportTarget, Runner

if TYPE_CHECKING:
    from torch import nn

OPSET = 18


def _exporter_note(node: Any, key: str) -> str:
    """One of the dynamo exporter's per-node metadata entries ("namespace": the module path,
    "pkg.torch.onnx.class_hierarchy": the module classes), or "" where the node has none."""
    return next((prop.value for prop in node.metadata_props if prop.key == key), "")


def head_nodes(model: Any) -> list[str]:
    """Names of the nodes outside the dense network (the `model.` submodule of a deployable graph): the vocabulary
    head, upsampling and background rule, which quantization leaves in float."""
    return [node.name for node in model.graph.node if "/model." not in _exporter_note(node, "namespace")]


def float_nodes(model: Any, output: str) -> tuple[list[str], list[str]]:
    """What int8 quantization of an exported graph leaves in float: the names of the head's nodes (`head_nodes`,
    unless the output is the embeddings) and of the nodes inside `FLOAT_MODULES`, and the record of why
    (`quantization.float_kept`)."""
    from ..quantize import float_kept, float_modules_in

    names = head_nodes(model) if output != "embeddings" else []
    found: set[str] = set()
    for node in model.graph.node:
        inside = float_modules_in([_exporter_note(node, "pkg.torch.onnx.class_hierarchy")])
        if inside:
            names.append(node.name)
            found.update(inside)
    return names, float_kept(output, found)


def strip_debug_info(model: Any) -> Any:
    """Drop the exporter's per-node stack traces and intermediate shapes: they double an int8 file's size and an app
    needs neither."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    del model.graph.value_info[:]
    return model


def torch_to_onnx(graph: nn.Module, job: ConversionJob) -> Any:
    """`graph` as an `onnx.ModelProto` with fixed shapes and the job's input and output names."""
    import onnx
    import torch

    program = torch.onnx.export(graph.eval(), (job.example,), dynamo=True, opset_version=OPSET, verbose=False,
                                input_names=[job.input_name], output_names=[job.output_name])
    model = program.model_proto
    onnx.checker.check_model(model)
    return model


class OnnxTarget(ExportTarget):
    name = "onnx"
    model_file = "model.onnx"
    precisions = ("fp32", "fp16", "int8")
    default_precision = "fp32"
    packages = ("onnx", "onnxruntime", "onnxscript", "nncf")

    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        import onnx

        from ..quantize import onnx_int8
        from .graph import Float16Compute
        from .inspection import onnx_float_layers

        graph = Float16Compute(job.graph) if job.precision == "fp16" else job.graph
        model, record = torch_to_onnx(graph, job), {}
        if job.precision == "int8":
            ignored, kept = float_nodes(model, job.output)
            model = onnx_int8(model, job.input_name, job.calibration.inputs, ignored, job.accuracy)
            record = {"engine": "nncf", "method": "nncf.quantize_with_accuracy_control" if job.accuracy else
                      "nncf.quantize", "quantizer": "NNCF ONNX (QuantizeLinear / DequantizeLinear, per-channel "
                      "weights)", "scheme": "W8A8", "float_kept": kept + onnx_float_layers(model)}
        onnx.save(strip_debug_info(model), str(path))
        return record

    def load(self, path: Path, threads: int | None = None) -> Runner:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # idle pool threads sleep instead of spinning: spinning threads steal the cores of whatever runs next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads is not None:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def inspect(self, path: Path) -> dict[str, Any]:
        import onnx

        model = onnx.load(str(path))

        def tensors(values: Any) -> list[dict[str, Any]]:
            return [{"name": v.name, "shape": [d.dim_value for d in v.type.tensor_type.shape.dim],
                     "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name} for v in values]

        ops: dict[str, int] = {}
        for node in model.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1
        return {"inputs": tensors(model.graph.input), "outputs": tensors(model.graph.output), "opset": OPSET, "ops": ops}


TARGET = OnnxTarget()
