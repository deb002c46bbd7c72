"""Core ML `.mlpackage` (mlprogram, iOS 17 / macOS 14 and later), converted from `torch.export`: fp16 compute (the
default), fp32, and int8 as W8A8 (int8 weights and activations, for the Neural Engine) from NNCF's PT2E calibration.
Conversion runs anywhere; prediction only on macOS, so on other hosts the package is checked structurally."""

from __future__ import annotations

import platform
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..quantize import PT2E_QUANTIZER, pt2e_int8
from .inspection import pt2e_float_kept
from .target import INPUT_NAME, CannotRun, ConversionJob, ExportTarget, Runner

DEPLOYMENT_TARGET = "iOS17"


def _operations(spec: Any) -> list[Any]:
    return [op for function in spec.mlProgram.functions.values()
            for block in function.block_specializations.values() for op in block.operations]


def _without_aliases(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """`program` with its `aten.alias` nodes (no-op views, e.g. of a 1x1 feature map) bypassed: coremltools 9 has no
    converter for them."""
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in (torch.ops.aten.alias.default,
                                                          torch.ops.aten.alias_copy.default):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    program.graph_module.recompile()
    return program


class CoreMLTarget(ExportTarget):
    name = "coreml"
    model_file = "model.mlpackage"
    precisions = ("fp16", "fp32", "int8")
    default_precision = "fp16"
    packages = ("coremltools", "torch")

    def cannot_run(self, precision: str | None = None) -> str | None:
        return None if platform.system() == "Darwin" else "Core ML prediction needs macOS"

    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        import coremltools as ct

        graph, record = job.graph, {}
        if job.precision == "int8":
            network = pt2e_int8(job.network, job.example, job.calibration.inputs)
            graph = job.simulated = job.rebuild(network)
            record = {"engine": "nncf", "method": "nncf.experimental.torch.fx.quantize_pt2e", "quantizer":
                      PT2E_QUANTIZER + ", converted by coremltools to quantize / dequantize ops",
                      "scheme": "W8A8 (int8 weights and activations; not weight-only)",
                      "note": "coremltools' own PT2E quantizer does not import with torch 2.14",
                      "float_kept": pt2e_float_kept(network, job.output)}
        program = _without_aliases(torch.export.export(graph.eval(), (job.example,)).run_decompositions({}))
        model = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=getattr(ct.target, DEPLOYMENT_TARGET),
            inputs=[ct.TensorType(name=job.input_name, shape=tuple(job.example.shape), dtype=np.float32)],
            outputs=[ct.TensorType(name=job.output_name)],
            compute_precision=ct.precision.FLOAT32 if job.precision == "fp32" else ct.precision.FLOAT16)
        model.save(str(path))
        # coremltools writes a debug map for ExecuTorch's Core ML delegate (0.2 - 0.4 MB) that no app reads and the
        # package's manifest does not list
        (path / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
        return record

    def load(self, path: Path, threads: int | None = None) -> Runner:
        reason = self.cannot_run()
        if reason:
            raise CannotRun(reason)
        import coremltools as ct

        model = ct.models.MLModel(str(path))
        names = [output.name for output in model.get_spec().description.output]
        return lambda x: np.asarray(model.predict({INPUT_NAME: np.asarray(x, dtype=np.float32)})[names[0]])

    def inspect(self, path: Path) -> dict[str, Any]:
        """Inputs, outputs (name, shape, dtype), op counts and the dtypes of the weight constants of the package."""
        import coremltools as ct

        spec = ct.utils.load_spec(str(path))
        kinds = {getattr(ct.proto.FeatureTypes_pb2.ArrayFeatureType, name): name.lower()
                 for name in ("FLOAT32", "FLOAT16", "INT32", "DOUBLE")}

        def features(values: Any) -> list[dict[str, Any]]:
            return [{"name": v.name, "shape": list(v.type.multiArrayType.shape),
                     "dtype": kinds.get(v.type.multiArrayType.dataType, str(v.type.multiArrayType.dataType))}
                    for v in values]

        operations = _operations(spec)
        weights: Counter[str] = Counter()
        for op in operations:
            if op.type in ("const", "constexpr_affine_dequantize"):
                for output in op.outputs:
                    tensor = output.type.tensorType
                    if len(tensor.dimensions) >= 2:  # weight tensors, not scalars or shapes
                        dtype = ct.proto.MIL_pb2.DataType.Name(tensor.dataType).lower()
                        weights["int8 (dequantized at load)" if op.type.startswith("constexpr") else dtype] += 1
        return {"inputs": features(spec.description.input), "outputs": features(spec.description.output),
                "spec_version": spec.specificationVersion, "deployment_target": DEPLOYMENT_TARGET,
                "ops": dict(Counter(op.type for op in operations)), "weight_tensors": dict(weights)}


TARGET = CoreMLTarget()
