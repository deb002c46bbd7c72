"""OpenVINO IR (`model.xml` + `model.bin`): fp32 (weights kept in fp32), and int8 by NNCF on the OpenVINO model,
which runs with the CPU plugin's int8 (VNNI / AMX) kernels. Converted from the ONNX export."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .onnx import float_nodes, torch_to_onnx
from .target import ConversionJob, ExportTarget, Runner


class OpenVinoTarget(ExportTarget):
    name = "openvino"
    model_file = "model.xml"
    precisions = ("fp32", "int8")
    default_precision = "fp32"
    packages = ("openvino", "nncf")
    # 1.3 - 1.7x faster than its Interpolate at 448 px, but 0.7x at 512 (benchmarks/upsampling.py): chosen at 448,
    # the size latency is quoted at; a choice per input size is still to come
    upsampling = "subpixel"

    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        import onnx
        import openvino

        from ..quantize import openvino_int8

        onnx_model = torch_to_onnx(job.graph, job)
        with tempfile.TemporaryDirectory() as folder:  # convert_model reads ONNX from a file
            onnx.save(onnx_model, f"{folder}/model.onnx")
            model, record = openvino.convert_model(f"{folder}/model.onnx"), {}
        if job.precision == "int8":
            ignored, kept = float_nodes(onnx_model, job.output)  # OpenVINO keeps ONNX's node names
            model = openvino_int8(model, job.calibration.inputs, ignored, job.accuracy)
            record = {"engine": "nncf", "method": "nncf.quantize_with_accuracy_control" if job.accuracy else
                      "nncf.quantize", "quantizer": "NNCF OpenVINO (FakeQuantize, per-channel weights)",
                      "scheme": "W8A8", "float_kept": kept}
        openvino.save_model(model, str(path), compress_to_fp16=False)
        return record

    def load(self, path: Path, threads: int | None = None) -> Runner:
        import openvino

        # f32: the graph as exported (the CPU plugin otherwise runs float parts in bf16 where the processor has it)
        config = {"INFERENCE_PRECISION_HINT": "f32", **({"INFERENCE_NUM_THREADS": threads} if threads else {})}
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
        return lambda x: compiled(np.ascontiguousarray(x, dtype=np.float32))[0]

    def inspect(self, path: Path) -> dict[str, Any]:
        import openvino

        model = openvino.Core().read_model(str(path))
        ports = lambda values: [{"name": v.get_any_name(), "shape": list(v.get_shape()),  # noqa: E731
                                 "dtype": v.get_element_type().to_dtype().name} for v in values]
        ops: dict[str, int] = {}
        for op in model.get_ordered_ops():
            ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
        return {"inputs": ports(model.inputs), "outputs": ports(model.outputs), "ops": ops}


TARGET = OpenVinoTarget()
