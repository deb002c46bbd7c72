"""Every export the deployment issue asks for, on distilled students (or a teacher): ExecuTorch fp32 + int8, ONNX
fp32 + int8, OpenVINO fp32 + int8, Core ML fp32 + fp16 + int8 (structurally on Linux), each parity-checked on the
whole validation split; int8 mIoU against the fp32 graph and int8 size against the same runtime's fp32 file.

    python benchmarks/export_toy.py --runs RUN [RUN ...] --data WORLD --out /tmp/export_toy \
        [--json benchmarks/results/export_toy.json] [--targets coreml ...]

WORLD is a synthetic world (`data synth`): int8 calibrates on WORLD/train, parity runs on WORLD/val."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mixreorg_edge.bench.host import host_info
from mixreorg_edge.bench.report import print_rows, write_results
from mixreorg_edge.bench.suite import artifact_bytes
from mixreorg_edge.export.artifact import ExportRequest, export_artifact
from mixreorg_edge.export.parity import ParityError

EXPORTS = (("executorch", "fp32"), ("executorch", "int8"), ("onnx", "fp32"), ("onnx", "int8"),
           ("openvino", "fp32"), ("openvino", "int8"), ("coreml", "fp32"), ("coreml", "fp16"), ("coreml", "int8"))
CALIBRATION_IMAGES = 128


def export_row(student: Path, world: Path, out: Path, target: str, precision: str) -> dict:
    request = ExportRequest(run=student, target=target, out=out, precision=precision,
                            calib=world / "train" if precision == "int8" else None,
                            num_samples=CALIBRATION_IMAGES, data=world / "val")
    try:
        metadata = export_artifact(request, log=lambda _: None)
    except ParityError:
        metadata = json.loads((out / "metadata.json").read_text())
    parity = metadata["parity"] if isinstance(metadata["parity"], dict) else {}
    quantization = metadata["quantization"] or {}
    row = {"student": metadata["model"]["name"], "target": target, "precision": precision,
           "status": metadata["status"], "size_mb": round(artifact_bytes(out) / 1e6, 3),
           "pixel_agreement": parity.get("pixel_agreement"), "miou": parity.get("miou"),
           "reference_miou": parity.get("reference_miou")}
    if "simulated_parity" in quantization:  # Core ML on Linux: the int8 graph it was converted from, in PyTorch
        row["miou_simulated_int8"] = quantization["simulated_parity"]["miou"]
        row["reference_miou"] = quantization["simulated_parity"]["reference_miou"]
    if target == "openvino":
        row["weights_mb"] = round((out / "model.bin").stat().st_size / 1e6, 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/export_toy.json"))
    parser.add_argument("--targets", nargs="+", default=sorted({target for target, _ in EXPORTS}),
                        help="only these targets")
    args = parser.parse_args()
    rows = []
    for student in args.runs:
        for target, precision in [(t, p) for t, p in EXPORTS if t in args.targets]:
            row = export_row(student, args.data, args.out / student.name / f"{target}-{precision}", target, precision)
            rows.append(row)
            print(json.dumps(row))
    for row in rows:  # int8 against fp32 of the same student and runtime
        if row["precision"] != "int8":
            continue
        fp32 = next(r for r in rows if r["student"] == row["student"] and r["target"] == row["target"]
                    and r["precision"] == "fp32")
        row["size_vs_fp32"] = round(row["size_mb"] / fp32["size_mb"], 3)
        if "weights_mb" in row:
            row["weights_vs_fp32"] = round(row["weights_mb"] / fp32["weights_mb"], 3)
        int8_miou = row["miou"] if row["miou"] is not None else row.get("miou_simulated_int8")
        if int8_miou is not None and row["reference_miou"] is not None:  # the fp32 PyTorch graph, same images
            row["miou_drop_vs_fp32"] = round(row["reference_miou"] - int8_miou, 2)
    columns = ["student", "target", "precision", "status", "size_mb", "size_vs_fp32", "weights_vs_fp32",
               "pixel_agreement", "miou", "miou_simulated_int8", "reference_miou", "miou_drop_vs_fp32"]
    print_rows("exports of the distilled students (objects mIoU, validation split)", rows, columns)
    write_results(args.json, {"command": "python benchmarks/export_toy.py " + " ".join(
        ["--runs", *map(str, args.runs), "--data", str(args.data), "--out", str(args.out), "--targets",
         *args.targets]),
        "calibration_images": CALIBRATION_IMAGES, **host_info()}, rows)


if __name__ == "__main__":
    main()
