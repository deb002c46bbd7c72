"""`export` and `quantize`: a run -> a self-describing, parity-checked artifact folder for one target.

    OUT/model.<ext>            the target's model file (model.xml + model.bin for OpenVINO, a folder for Core ML)
    OUT/metadata.json          what an app needs: input, preprocessing, labels, output, background rule, versions,
                               quantization, parity
    OUT/vocabulary.json        (`embeddings` output) the vocabulary as plain JSON; vocabulary.safetensors for Python

The artifact is built in a hidden folder beside OUT and renamed into place: a failed conversion leaves nothing
behind. An artifact whose parity check fails is kept for inspection with `status: "parity failed"`, and the
command exits non-zero."""

from __future__ import annotations

import copy
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.standard_layouts import open_segmentation_dataset
from ..head import VocabularyHead
from ..quantize import AccuracyControl
from ..checkpoint import current_umask, load_model_config
from ..runs import model_file, write_json_atomic
from ..vocab import LabelSet, save_vocabulary
from .graph import Deployable, check_image_size, default_image_size, load_deployable
from .images import labelled_inputs, load_calibration, preprocess_record
from .metadata import (FORMAT_VERSION, VOCABULARY_JSON, VOCABULARY_SAFETENSORS, EMBEDDINGS_TO_LABELS,
                       background_record, now_utc, toolkit_versions, vocab_hash, vocabulary_json)
from .parity import ParityError, check_parity, measure_parity, output_labels
from .target import INPUT_NAME, CannotRun, ConversionJob, ExportTarget, get_target

METADATA_FILE = "metadata.json"
ACCURACY_CONTROL_TARGETS = ("onnx", "openvino")


@dataclass
class ExportRequest:
    """Everything `export` was asked for (checked by `validate` before any work)."""

    run: Path
    target: str
    out: Path
    precision: str | None = None
    output: str = "labels"
    imgsz: int | None = None
    calib: Path | None = None
    num_samples: int = 128
    vocab: Path | None = None
    data: Path | None = None
    label_set: str = "objects"
    max_drop: float | None = None
    parity_images: int | None = None
    min_agreement: float | None = None  # default: the precision's threshold (parity.THRESHOLDS)

    def validate(self) -> ExportTarget:
        """The target, once every option is known to fit it; one clear error otherwise."""
        target = get_target(self.target)
        self.precision = self.precision or target.default_precision
        target.check_options(self.precision, self.output)
        reason = target.missing()
        if reason:
            raise ValueError(f"--target {self.target}: {reason}")
        if self.out.exists():
            raise FileExistsError(f"{self.out} exists; choose another --out or remove it")
        if self.precision == "int8" and self.calib is None:
            raise ValueError("--precision int8 needs --calib DIR: training images (shards or an image folder) to "
                             "calibrate the int8 ranges on")
        if self.precision != "int8" and self.calib is not None:
            raise ValueError(f"--calib calibrates int8; --precision {self.precision} does not use it")
        if self.max_drop is not None:
            if self.precision != "int8" or self.target not in ACCURACY_CONTROL_TARGETS:
                raise ValueError("--max-drop (NNCF's accuracy control) works for int8 on "
                                 f"{' and '.join(ACCURACY_CONTROL_TARGETS)} only")
            if self.output == "embeddings":
                raise ValueError("--max-drop measures mIoU on labels: use --output labels or scores")
            if self.max_drop <= 0:
                raise ValueError(f"--max-drop must be positive (mIoU points), got {self.max_drop}")
        if self.imgsz is not None:
            check_image_size(self.imgsz)
        if self.min_agreement is not None and not 0.0 < self.min_agreement <= 1.0:
            raise ValueError(f"--min-agreement is a fraction in (0, 1], got {self.min_agreement}")
        if self.parity_images is not None and self.parity_images < 1:
            raise ValueError(f"--parity-images must be at least 1, got {self.parity_images}")
        return target


def parity_data(request: ExportRequest, config: dict[str, Any]) -> Path:
    """The labelled split parity runs on: --data, else the `val` folder beside the run's training shards."""
    if request.data is not None:
        return request.data
    trained_on = config.get("data")
    if trained_on:
        candidate = Path(trained_on).parent / "val"
        if (candidate / "classes.json").is_file():
            return candidate
    raise ValueError("give --data VALDIR: labelled validation images for the parity check (none found beside the "
                     "run's training data)")


def _structure_problems(structure: dict[str, Any], job: ConversionJob) -> list[str]:
    """What a saved model's structure gets wrong: its input shape, or (int8) no int8 weights or quantize ops."""
    problems = []
    inputs = structure.get("inputs") or []
    shapes = [entry.get("shape") for entry in inputs if isinstance(entry, dict)]
    if shapes and list(shapes[0]) != list(job.example.shape):
        problems.append(f"input shape {shapes[0]} (expected {list(job.example.shape)})")
    if job.precision == "int8":
        if "weight_tensors" in structure and not any("int8" in dtype for dtype in structure["weight_tensors"]):
            problems.append("no int8 weights")
        ops = structure.get("ops")
        if ops is not None and not any("quantize" in op.lower() for op in ops):
            problems.append("no quantize ops")
    return problems


def export_artifact(request: ExportRequest, log=print) -> dict[str, Any]:
    """Export `request.run` for `request.target`; returns the artifact's metadata. Raises ValueError for bad options
    (before any work), ParityError (after keeping the artifact) when its labels disagree with PyTorch's."""
    target = request.validate()
    config = load_model_config(model_file(request.run))  # the header: load_deployable reads the weights once
    data = parity_data(request, config)
    dataset = open_segmentation_dataset(data, request.label_set)  # its label set is the default vocabulary
    if request.calib is not None and request.calib.resolve() == Path(data).resolve():
        raise ValueError(f"--calib {request.calib} is the split parity and mIoU are reported on; calibrate on "
                         "training images")
    labels = LabelSet(dataset.classes, dataset.background_words, dataset.background_threshold)
    deployable = load_deployable(request.run, request.output, labels, request.vocab)
    size = request.imgsz or default_image_size(config)
    check_image_size(size)
    example = torch.zeros(1, 3, size, size)
    vocabulary = deployable.vocabulary
    head = VocabularyHead(vocabulary).eval()
    num_classes = len(dataset.classes) if vocabulary.label_set == dataset.classes else None
    pairs = labelled_inputs(dataset, (size, size), request.parity_images)
    calibration = None
    if request.calib is not None:
        log(f"calibration images from {request.calib}")
        calibration = load_calibration(request.calib, (size, size), request.num_samples)
    accuracy = None
    if request.max_drop is not None:
        if num_classes is None:
            raise ValueError("--max-drop needs the vocabulary to be the --data split's label set")
        accuracy = AccuracyControl(pairs, request.max_drop, num_classes,
                                   lambda out: output_labels(torch.from_numpy(out), request.output, head,
                                                             (size, size)).numpy())
    graph = deployable.graph(upsampling=target.upsampling)
    # what parity compares with: the plain graph (interpolate upsampling), untouched by whatever the conversion does
    reference = copy.deepcopy(deployable.graph())
    rebuild = functools.partial(deployable.graph, upsampling=target.upsampling)
    job = ConversionJob(graph=graph, network=deployable.network, rebuild=rebuild, output=request.output,
                        example=example, precision=request.precision, calibration=calibration, accuracy=accuracy)
    out = Path(request.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    staging.chmod(0o777 & ~current_umask())  # a plain mkdir's permissions, not mkdtemp's 0700
    try:
        model_path = staging / target.file_name(request.precision)
        log(f"converting to {target.name} {request.precision} ...")
        quantization = target.convert(job, model_path)
        if request.output == "embeddings":
            (staging / VOCABULARY_JSON).write_text(json.dumps(vocabulary_json(vocabulary)) + "\n")
            save_vocabulary(vocabulary, staging / VOCABULARY_SAFETENSORS)
        structure = target.inspect(model_path)
        problems = _structure_problems(structure, job)
        if problems:
            raise RuntimeError(f"the saved {target.name} model is malformed: {'; '.join(problems)}")
        failure, simulated_parity = None, None
        try:
            runner = target.load(model_path)
        except CannotRun as reason:
            parity: Any = f"not run: {reason}"
            log(f"parity {parity}; the package was checked structurally")
            if job.simulated is not None:  # the int8 graph it was converted from, run by PyTorch
                simulated = job.simulated
                simulated_parity = measure_parity(lambda x: simulated(torch.from_numpy(x)).numpy(), reference,
                                                  pairs, request.output, head, num_classes)
        else:
            log(f"parity on {len(pairs)} images of {data} ...")
            parity = measure_parity(runner, reference, pairs, request.output, head, num_classes)
            failure = check_parity(parity, request.precision, request.min_agreement)
        if quantization:
            quantization.update(calibration=calibration.record(), max_drop=request.max_drop)
            measured = parity if isinstance(parity, dict) else simulated_parity
            if measured is not None:
                quantization.update(miou_before=measured["reference_miou"], miou_after=measured["miou"],
                                    miou_after_measured_by=target.name if measured is parity else
                                    "PyTorch running the quantized graph the package was converted from")
            if simulated_parity is not None:
                quantization["simulated_parity"] = simulated_parity
        metadata = _metadata(request, target, deployable, model_path.name, structure, quantization, parity,
                             data, size, failure)
        write_json_atomic(staging / METADATA_FILE, metadata)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if failure:
        raise ParityError(f"{failure}; the artifact is kept for inspection in {out}")
    return metadata


def _output_record(request: ExportRequest, structure: dict[str, Any], size: int, embed_dim: int) -> dict[str, Any]:
    shapes = {"labels": [1, size, size], "scores": None, "embeddings": [1, embed_dim, size // 8, size // 8]}
    outputs = structure.get("outputs") or [{}]
    recorded = outputs[0] if isinstance(outputs[0], dict) else {}
    return {"name": request.output, "kind": request.output,
            "shape": recorded.get("shape") or shapes[request.output], "dtype": recorded.get("dtype")}


def _metadata(request: ExportRequest, target: ExportTarget, deployable: Deployable, model_name: str,
              structure: dict[str, Any], quantization: dict[str, Any], parity: Any, data: Path, size: int,
              failure: str | None) -> dict[str, Any]:
    vocabulary = deployable.vocabulary
    status = "parity failed" if failure else ("passed" if isinstance(parity, dict) else "passed structural check")
    record = {
        "format": "mixreorg-edge artifact", "format_version": FORMAT_VERSION, "status": status,
        "failure": failure, "target": target.name, "precision": request.precision, "model_file": model_name,
        "model": deployable.description,
        "labels": vocabulary.label_set, "label_set": request.label_set if request.vocab is None else str(request.vocab),
        "vocab_hash": vocab_hash(vocabulary),
        "input": {"name": INPUT_NAME, "shape": [1, 3, size, size], "dtype": "float32"},
        "preprocess": preprocess_record(),
        "output": _output_record(request, structure, size, vocabulary.embed_dim),
        "background": background_record(vocabulary),
        "quantization": quantization or None,
        "versions": toolkit_versions(target.versions()),
        "parity": parity, "parity_data": str(Path(data).resolve()),
        "structure": structure, "created_utc": now_utc(),
    }
    if runtime_config := target.runtime_config(request.precision):
        record["runtime_config"] = runtime_config
    if request.output == "labels":
        record["output"]["upsampling"] = target.upsampling  # inside the graph; the labels are the same either way
    if request.output == "scores":
        record["output"]["meaning"] = "probabilities over `labels` (background rule applied); label = argmax"
    if request.output == "embeddings":
        record["vocabulary_file"] = VOCABULARY_JSON
        record["embeddings_to_labels"] = EMBEDDINGS_TO_LABELS
    return record


def read_metadata(folder: Path) -> dict[str, Any]:
    """An artifact folder's metadata.json (clear errors for a folder without one)."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not an exported artifact (no {METADATA_FILE})")
    return json.loads(path.read_text())
