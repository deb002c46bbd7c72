"""Which upsampling each runtime should get in a `labels` graph: the deployed graph of freshly initialised students
(weights do not change the cost) with the bilinear upsample as the runtime's resize op (`interpolate`) and as a
convolution into sub-pixel phases (`subpixel`, mixreorg_edge/upsampling.py), converted by each export target as
`export` converts it (fp32), loaded on this host and timed interleaved in one process, with the two graphs' labels
compared. The export targets take the faster form (`ExportTarget.upsampling`); this script is the measurement
behind that choice.

    python benchmarks/upsampling.py --threads 2

Writes benchmarks/results/upsampling.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle runtimes' threads must not spin on the shared cores

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mixreorg_edge.bench.graphs import random_vocabulary  # noqa: E402
from mixreorg_edge.bench.host import host_info  # noqa: E402
from mixreorg_edge.bench.report import print_rows, write_results  # noqa: E402
from mixreorg_edge.bench.timing import measure_latencies  # noqa: E402
from mixreorg_edge.distill.student import DenseStudent, SegmentationModel, StudentConfig  # noqa: E402
from mixreorg_edge.export.prepare import prepare_for_inference  # noqa: E402
from mixreorg_edge.export.target import ConversionJob, get_target  # noqa: E402
from mixreorg_edge.upsampling import UPSAMPLING  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "upsampling.json"
RUNTIMES = ("eager", "onnx", "openvino", "executorch")


def runner(runtime: str, graph: torch.nn.Module, example: torch.Tensor, folder: Path, threads: int):
    """`graph` on `runtime`: images (float32 array) -> labels (array)."""
    if runtime == "eager":
        prepared = prepare_for_inference(graph, example)
        return lambda x: prepared(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
    target = get_target(runtime)
    path = folder / target.file_name("fp32")
    job = ConversionJob(graph=graph, network=graph, rebuild=lambda network: network, output="labels",
                        example=example, precision="fp32")
    target.convert(job, path)
    return target.load(path, threads=threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", nargs="+", default=["mobilenetv4:conv_small", "mobilevit:xxs"])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--size", type=int, default=448, help="input side in pixels (a multiple of 32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30, help="timed rounds (every graph once per round)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    example = torch.zeros(1, 3, args.size, args.size)
    images = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    runners, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for student in args.students:
            torch.manual_seed(0)
            model = DenseStudent(StudentConfig(student, embed_dim=256, image_size=args.size)).eval()
            vocabulary = random_vocabulary(model.embed_dim)
            reference = SegmentationModel(model, vocabulary, output="labels").eval()(torch.from_numpy(images))
            for runtime in args.runtimes:
                for upsampling in UPSAMPLING:
                    key = f"{student} {runtime} {upsampling}"
                    print(f"converting {key} ...", flush=True)
                    folder = Path(tmp) / key.replace(" ", "_").replace(":", "-")
                    folder.mkdir()
                    graph = SegmentationModel(model, vocabulary, output="labels", upsampling=upsampling).eval()
                    runners[key] = runner(runtime, graph, example, folder, args.threads)
                    labels = np.asarray(runners[key](images)).reshape(reference.shape)
                    rows[key] = {"student": student, "runtime": runtime, "upsampling": upsampling,
                                 "agreement_with_eager_interpolate": float((labels == reference.numpy()).mean())}
        timings = measure_latencies({key: (lambda run=run: run(images)) for key, run in runners.items()},
                                    runs=args.runs)
    for key, row in rows.items():
        row.update({"latency_ms_median": timings[key]["median_ms"], "latency_ms_p90": timings[key]["p90_ms"]})
    for key, row in rows.items():
        if row["upsampling"] == "subpixel":
            plain = rows[key.replace("subpixel", "interpolate")]
            row["speedup_over_interpolate"] = round(plain["latency_ms_median"] / row["latency_ms_median"], 2)
    table = list(rows.values())
    print_rows(f"labels graphs at {args.size}x{args.size}, fp32, {args.threads} threads, median of {args.runs} "
               "interleaved rounds (ms)", table,
               ["student", "runtime", "upsampling", "latency_ms_median", "latency_ms_p90", "speedup_over_interpolate",
                "agreement_with_eager_interpolate"])
    write_results(args.out, {"host": host_info(), "size": args.size, "threads": args.threads, "runs": args.runs},
                  table)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
