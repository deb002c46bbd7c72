"""OpenVINO IR (`model.xml` + `model.bin`): fp32 (weights kept in fp32); bf16, the same IR run with the CPU plugin's
bf16 inference precision (AVX512_BF16 / AMX kernels; the plugin's own default on processors that have them); and int8
by NNCF on the OpenVINO model, which runs with the CPU plugin's int8 (VNNI / AMX) kernels. Converted from the ONNX
export. The inference precision is part of the artifact: in `metadata.json`'s `runtime_config` for an app, and in the
IR's `rt_info` (`runtime_options`) for `load`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .onnx import float_nodes, torch_to_onnx
from .target import CannotRun, ConversionJob, ExportTarget, Runner

_RUNTIME_OPTIONS, _PRECISION_HINT = "runtime_options", "INFERENCE_PRECISION_HINT"


class OpenVinoTarget(ExportTarget):
    name = "openvino"
    model_file = "model.xml"
    precisions = ("fp32", "bf16", "int8")
    default_precision = "fp32"
    packages = ("openvino", "nncf")
    # 1.3 - 1.7x faster than its Interpolate at 448 px, but 0.7x at 512 (benchmarks/upsampling.py): chosen at 448,
    # the size latency is quoted at; a choice per input size is still to come
    upsampling = "subpixel"

    def cannot_run(self, precision: str | None = None) -> str | None:
        if precision != "bf16":
            return None
        import openvino

        capabilities = openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return None if "BF16" in capabilities else (
            "OpenVINO bf16 needs a processor with bf16 instructions (AVX512_BF16 or AMX); this one offers "
            f"{', '.join(capabilities)}")

    def runtime_config(self, precision: str) -> dict[str, str]:
        # the float parts in f32 unless bf16 is asked for: the CPU plugin otherwise picks bf16 where the processor
        # has it, which is not the graph whose parity was checked
        return {_PRECISION_HINT: "bf16" if precision == "bf16" else "f32"}

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
        for key, value in self.runtime_config(job.precision).items():
            model.set_rt_info(value, [_RUNTIME_OPTIONS, key])
        openvino.save_model(model, str(path), compress_to_fp16=False)
        return record

    def load(self, path: Path, threads: int | None = None) -> Runner:
        import openvino

        core = openvino.Core()
        model = core.read_model(str(path))
        properties = compile_properties(model, threads)
        reason = self.cannot_run("bf16") if properties[_PRECISION_HINT] == "bf16" else None
        if reason:
            raise CannotRun(reason)  # the plugin would silently run f32 instead
        compiled = core.compile_model(model, "CPU", properties)
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


def compile_properties(model: Any, threads: int | None = None) -> dict[str, Any]:
    """The CPU plugin's properties for an `openvino.Model` read from an artifact: the inference precision its IR
    records (f32 for artifacts made before it was recorded) and `threads`."""
    where = [_RUNTIME_OPTIONS, _PRECISION_HINT]
    hint = model.get_rt_info(where).astype(str) if model.has_rt_info(where) else "f32"
    return {_PRECISION_HINT: hint, **({"INFERENCE_NUM_THREADS": threads} if threads else {})}


TARGET = OpenVinoTarget()
