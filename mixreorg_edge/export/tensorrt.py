"""TensorRT, through Torch-TensorRT's dynamo path (`torch_tensorrt.compile(ir="dynamo")`, saved as an ExportedProgram
`.ep` that embeds the engine): fp16, and int8 from NNCF's Q/DQ ONNX (explicit quantization, the only int8 TensorRT
10+ takes). Needs CUDA and the optional extra: `pip install -e ".[tensorrt]"`. Engines are tied to the GPU and
TensorRT version they were built with."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..quantize import onnx_int8
from .onnx import float_nodes, strip_debug_info, torch_to_onnx
from .target import CannotRun, ConversionJob, ExportTarget, Runner


class TensorRTTarget(ExportTarget):
    name = "tensorrt"
    model_file = "model.ep"
    precisions = ("fp16", "int8")
    default_precision = "fp16"
    packages = ("torch-tensorrt", "tensorrt", "torch")

    def file_name(self, precision: str) -> str:
        return "model.engine" if precision == "int8" else self.model_file

    def missing(self) -> str | None:
        if not torch.cuda.is_available():
            return "TensorRT needs CUDA, and this host has no CUDA device"
        for module, extra in (("torch_tensorrt", "torch-tensorrt"), ("tensorrt", "tensorrt")):
            if importlib.util.find_spec(module) is None:
                return f"TensorRT export needs {extra}: pip install -e \".[tensorrt]\""
        return None

    def cannot_run(self, precision: str | None = None) -> str | None:
        return self.missing()

    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        reason = self.missing()
        if reason:
            raise CannotRun(reason)
        if job.precision == "int8":
            return self._int8_engine(job, path)
        import torch_tensorrt

        example = job.example.cuda()
        program = torch.export.export(job.graph.eval().cuda(), (example,))
        compiled = torch_tensorrt.dynamo.compile(program, inputs=[example], enabled_precisions={torch.float16})
        torch_tensorrt.save(compiled, str(path), inputs=[example])
        return {}

    def _int8_engine(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        """NNCF Q/DQ ONNX -> a serialized TensorRT engine (explicit quantization) written at `path`."""
        import tensorrt as trt

        model = torch_to_onnx(job.graph, job)
        ignored, kept = float_nodes(model, job.output)
        model = strip_debug_info(onnx_int8(model, job.input_name, job.calibration.inputs, ignored))
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model.SerializeToString()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse the int8 ONNX: {errors}")
        engine = builder.build_serialized_network(network, builder.create_builder_config())
        if engine is None:
            raise RuntimeError("TensorRT could not build the int8 engine")
        path.write_bytes(bytes(engine))
        return {"engine": "nncf", "method": "nncf.quantize", "quantizer": "NNCF ONNX Q/DQ -> TensorRT explicit int8",
                "scheme": "W8A8", "float_kept": kept}

    def load(self, path: Path, threads: int | None = None) -> Runner:
        reason = self.missing()
        if reason:
            raise CannotRun(reason)
        if path.suffix == ".engine":
            return _engine_runner(path)
        program = torch.export.load(str(path))
        module = program.module()
        return lambda x: module(torch.from_numpy(np.ascontiguousarray(x)).cuda()).cpu().numpy()


def _engine_runner(path: Path) -> Runner:
    """A serialized engine with one input and one output, run on torch's CUDA tensors."""
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    dtype = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int64: torch.int64}[engine.get_tensor_dtype(output_name)]

    def run(x: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
        output = torch.empty(tuple(engine.get_tensor_shape(output_name)), dtype=dtype, device="cuda")
        context.set_tensor_address(input_name, inputs.data_ptr())
        context.set_tensor_address(output_name, output.data_ptr())
        context.execute_async_v3(torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        return output.cpu().numpy()

    return run


TARGET = TensorRTTarget()
