"""ExecuTorch `.pte` with the XNNPACK delegate: fp32, and int8 through NNCF's PT2E route with XNNPACK's quantizer
(real int8 XNNPACK kernels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..quantize import PT2E_QUANTIZER, pt2e_int8
from .inspection import pt2e_float_kept
from .target import ConversionJob, ExportTarget, Runner


# ExecuTorch's ScalarType codes (c10's numbering) of the dtypes a deployable graph takes or gives
_SCALAR_TYPES = {3: "int32", 4: "int64", 5: "float16", 6: "float32"}


class ExecuTorchTarget(ExportTarget):
    name = "executorch"
    model_file = "model.pte"
    precisions = ("fp32", "int8")
    default_precision = "fp32"
    packages = ("executorch", "torch")

    def convert(self, job: ConversionJob, path: Path) -> dict[str, Any]:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        graph, record = job.graph, {}
        if job.precision == "int8":
            network = pt2e_int8(job.network, job.example, job.calibration.inputs)
            graph = job.simulated = job.rebuild(network)
            record = {"engine": "nncf", "method": "nncf.experimental.torch.fx.quantize_pt2e", "quantizer": PT2E_QUANTIZER,
                      "scheme": "W8A8",
                      "float_kept": pt2e_float_kept(network, job.output)}
        program = torch.export.export(graph.eval(), (job.example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        path.write_bytes(lowered.to_executorch().buffer)
        return record

    def load(self, path: Path, threads: int | None = None) -> Runner:
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        if threads is not None:
            _unsafe_reset_threadpool(threads)  # XNNPACK's thread pool
        method = Runtime.get().load_program(str(path)).load_method("forward")
        return lambda x: method.execute([torch.from_numpy(np.ascontiguousarray(x))])[0].numpy()

    def inspect(self, path: Path) -> dict[str, Any]:
        from executorch.runtime import Runtime

        meta = Runtime.get().load_program(str(path)).metadata("forward")
        tensors = lambda get, count: [{"shape": list(get(i).sizes()), "dtype": _SCALAR_TYPES.get(int(get(i).dtype()), str(get(i).dtype()))}  # noqa: E731
                                      for i in range(count)]
        return {"inputs": tensors(meta.input_tensor_meta, meta.num_inputs()),
                "outputs": tensors(meta.output_tensor_meta, meta.num_outputs())}


TARGET = ExecuTorchTarget()
