"""The browser demo in a real browser (Debian's Chromium, driven by Playwright): the page's label map equals ONNX
Runtime's in Python for the same artifact, a vocabulary swap relabels without rerunning the model, and bad input is
a message on the page. Screenshots are kept in `test-artifacts/` (or MIXREORG_TEST_ARTIFACTS).

Without Chromium or Playwright these tests skip, saying why; `.ci/run` installs both and sets
MIXREORG_REQUIRE_BROWSER=1, which turns the skip into a failure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from http.client import HTTPConnection
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixreorg_edge import browser
from mixreorg_edge.demo import artifact_problems, find_web_dir, running_demo
from mixreorg_edge.export.artifact import ExportRequest, export_artifact, read_metadata
from mixreorg_edge.export.images import preprocess
from mixreorg_edge.export.parity import output_labels
from mixreorg_edge.export.target import get_target
from mixreorg_edge.head import VocabularyHead
from mixreorg_edge.overlay import class_colours
from mixreorg_edge.vocab import Vocabulary, load_vocabulary

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("MIXREORG_TEST_ARTIFACTS", REPO / "test-artifacts"))
MIN_AGREEMENT = 0.995  # the bar: pixels the page labels as ONNX Runtime in Python does
SIZE = 64


def _skip(reason: str) -> None:
    if os.environ.get("MIXREORG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"MIXREORG_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def web_dir() -> Path:
    try:
        return find_web_dir()
    except FileNotFoundError as error:
        _skip(str(error))


@pytest.fixture(scope="module")
def chromium(web_dir: Path):
    reason = browser.browser_missing()
    if reason:
        _skip(reason)
    with browser.headless_chromium() as instance:
        yield instance


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six labelled validation images at the shipped teacher's size."""
    from mixreorg_edge.data.synth import write_synthetic_world

    out = tmp_path_factory.mktemp("world64")
    write_synthetic_world(out, train=0, val=6, size=SIZE, seed=5, shard_size=32, workers=1)
    return out


@pytest.fixture(scope="module")
def artifacts(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The shipped toy teacher (a trained model, so the overlay is a real one) as ONNX `labels` and `embeddings`."""
    teacher = Path(str(resources.files("mixreorg_edge").joinpath("assets", "toy_teacher")))
    root = tmp_path_factory.mktemp("artifacts")
    return {kind: _export(teacher, world, root / kind, kind) for kind in ("labels", "embeddings")}


def _export(run: Path, world: Path, out: Path, output: str) -> Path:
    export_artifact(ExportRequest(run=run, target="onnx", out=out, data=world / "val", output=output, imgsz=SIZE,
                                  parity_images=2), log=lambda _: None)
    return out


def _images(world: Path) -> list[Path]:
    return sorted((world / "val" / "images").iterdir())


def _python_labels(artifact: Path, image: Path, vocabulary: Vocabulary | None = None) -> np.ndarray:
    """ONNX Runtime in Python on the same artifact and image, the label rule from `metadata.json`."""
    metadata = read_metadata(artifact)
    run = get_target("onnx").load(artifact / metadata["model_file"])
    size = tuple(metadata["input"]["shape"][2:])
    with Image.open(image) as picture:
        out = run(preprocess(picture, size).numpy())
    if metadata["output"]["kind"] == "labels":
        return np.asarray(out)[0]
    head = VocabularyHead(vocabulary or load_vocabulary(artifact / "vocabulary.safetensors"))
    return output_labels(torch.from_numpy(np.asarray(out)), "embeddings", head, size)[0].numpy()


def _agreement(page, expected: np.ndarray) -> float:
    labels = browser.page_labels(page)
    assert labels.shape == expected.shape
    return float((labels == expected).mean())


def _without(vocabulary: Vocabulary, name: str) -> Vocabulary:
    keep = [i for i, entry in enumerate(vocabulary.foreground + vocabulary.background_words) if entry != name]
    return Vocabulary(label_set=[n for n in vocabulary.label_set if n != name],
                      background_words=vocabulary.background_words, embeddings=vocabulary.embeddings[keep],
                      logit_scale=vocabulary.logit_scale, background_bias=vocabulary.background_bias)


def test_page_labels_match_onnxruntime_in_python(chromium, artifacts: dict[str, Path], world: Path) -> None:
    with running_demo(artifacts["labels"]) as url:
        page = browser.open_demo(chromium, url)
        state = browser.demo_state(page)
        assert state["state"] == "ready" and state["error"] is None, state
        assert state["backend"].startswith("wasm, 2 threads")  # cross-origin isolated: threads on
        for image in _images(world)[:3]:
            browser.segment(page, image)
            assert browser.demo_state(page)["state"] == "done"
            agreement = _agreement(page, _python_labels(artifacts["labels"], image))
            assert agreement >= MIN_AGREEMENT, f"{image.name}: {agreement:.4f}"
        assert "background" in page.inner_text("#legend") and "ms" in page.inner_text("#timing")
        colours = page.evaluate("() => mixreorgDemo.colours")
        assert [tuple(c) for c in colours] == class_colours(read_metadata(artifacts["labels"])["labels"])
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "web_demo.png"), full_page=True)


def test_vocabulary_swap_relabels_without_rerunning(chromium, artifacts: dict[str, Path], world: Path,
                                                    tmp_path: Path) -> None:
    artifact = artifacts["embeddings"]
    vocabulary = load_vocabulary(artifact / "vocabulary.safetensors")
    image = _images(world)[-1]  # four classes; GroupViT's top-5 rule moves 7 % of its pixels at threshold 0.2
    with running_demo(artifact) as url:
        page = browser.open_demo(chromium, url)
        browser.segment(page, image)
        expected = _python_labels(artifact, image)
        assert _agreement(page, expected) >= MIN_AGREEMENT
        present = [vocabulary.label_set[i] for i in np.unique(expected) if vocabulary.label_set[i] != "background"]
        assert present, "the image shows no object: the swap would not be tested"
        runs, updates = browser.demo_state(page)["runs"], browser.demo_state(page)["updates"]
        page.uncheck(f'#vocabulary input[value="{present[0]}"]')
        browser.wait_for_update(page, updates)
        assert browser.demo_state(page)["runs"] == runs  # relabelled from the kept embeddings
        reduced = _without(vocabulary, present[0])
        reduced_labels = _python_labels(artifact, image, reduced)
        names = vocabulary.label_set
        page_names = np.array(names)[browser.page_labels(page)]
        assert present[0] not in page_names
        assert (page_names == np.array(reduced.label_set)[reduced_labels]).mean() >= MIN_AGREEMENT
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "web_demo_unticked.png"), full_page=True)

        for name, classes in SWAPS.items():  # background words, then GroupViT's threshold rule
            swapped = _swapped_vocabulary(artifact, tmp_path / name, classes)
            updates = browser.demo_state(page)["updates"]
            page.set_input_files("#vocabulary-file", str(swapped.with_suffix(".json")))
            browser.wait_for_update(page, updates)
            state = browser.demo_state(page)
            assert state["error"] is None and state["runs"] == runs
            other = load_vocabulary(swapped)
            expected = _python_labels(artifact, image, other)
            assert (browser.page_labels(page) == expected).mean() >= MIN_AGREEMENT, name
            assert len(np.unique(expected)) > 1, f"{name}: one label everywhere tests little"


# Vocabularies the page swaps to: background words; and a threshold with more classes than GroupViT keeps (5)
SWAPS = {
    "words": {"classes": ["background", "boat", "bird", "fish"], "background_words": ["water", "sky"]},
    "threshold": {"classes": ["background", "sun", "tree", "house", "car", "boat", "fish", "flower", "bird", "cup"],
                  "background_threshold": 0.2},
}


def _swapped_vocabulary(artifact: Path, folder: Path, spec: dict) -> Path:
    """Another vocabulary from the same (shipped) teacher, built by `vocab build` from the class file `spec`."""
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    folder.mkdir()
    classes = folder / "classes.json"
    classes.write_text(json.dumps(spec))
    out = folder / "vocabulary.safetensors"
    teacher = read_metadata(artifact)["model"]["run"]
    result = CliRunner().invoke(app, ["vocab", "build", "--teacher", teacher, "--classes", str(classes),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _seven_dimensional(path: Path) -> str:
    """The vocabulary JSON at `path` cut to 7-dimensional embeddings: a vocabulary of another dimension."""
    vocabulary = json.loads(path.read_text())
    return json.dumps({**vocabulary, "embed_dim": 7, "embeddings": [row[:7] for row in vocabulary["embeddings"]]})


def _broken_copies(artifacts: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Artifact folders a user could point the page at by mistake."""
    no_metadata = tmp_path / "no-metadata"
    shutil.copytree(artifacts["labels"], no_metadata)
    (no_metadata / "metadata.json").unlink()
    mismatched = tmp_path / "mismatched"
    shutil.copytree(artifacts["labels"], mismatched)
    shutil.copy(artifacts["embeddings"] / "model.onnx", mismatched / "model.onnx")
    other_dim = tmp_path / "other-dim"
    shutil.copytree(artifacts["embeddings"], other_dim)
    (other_dim / "vocabulary.json").write_text(_seven_dimensional(other_dim / "vocabulary.json"))
    return {"metadata.json": no_metadata, "does not match metadata.json": mismatched, "7-dimensional": other_dim}


def test_bad_artifacts_are_a_message_on_the_page_and_in_the_terminal(chromium, artifacts: dict[str, Path],
                                                                     tmp_path: Path) -> None:
    for message, folder in _broken_copies(artifacts, tmp_path).items():
        problems = artifact_problems(folder)
        assert len(problems) == 1 and message in problems[0], problems
        with running_demo(folder) as url:
            page = browser.open_demo(chromium, url)
            state = browser.demo_state(page)
            assert state["state"] == "error" and message in state["error"], state
            assert page.is_visible("#error") and message in page.inner_text("#error")


def test_bad_images_and_vocabularies_are_a_message_on_the_page(chromium, artifacts: dict[str, Path],
                                                              tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    other_dim = tmp_path / "other-dim.json"
    other_dim.write_text(_seven_dimensional(artifacts["embeddings"] / "vocabulary.json"))
    with running_demo(artifacts["embeddings"]) as url:
        page = browser.open_demo(chromium, url)
        browser.segment(page, broken)
        state = browser.demo_state(page)
        assert state["state"] == "ready" and "Could not decode broken.png" in state["error"], state
        assert page.is_visible("#error")
        updates = state["updates"]
        page.set_input_files("#vocabulary-file", str(other_dim))
        browser.wait_for_update(page, updates)
        assert "7-dimensional" in browser.demo_state(page)["error"]


def test_demo_command_serves_the_page_and_reports_problems(web_dir: Path, artifacts: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """The CLI end to end in a subprocess: the address printed, the page and artifact served with cross-origin
    isolation, a problem printed in the terminal, nothing outside the three roots served."""
    folder = tmp_path / "mismatched"
    shutil.copytree(artifacts["labels"], folder)
    shutil.copy(artifacts["embeddings"] / "model.onnx", folder / "model.onnx")
    command = [sys.executable, "-m", "mixreorg_edge.cli", "demo", "--artifact", str(folder), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "COLUMNS": "300"})
    try:
        line = process.stdout.readline()
        assert "open http://127.0.0.1:" in line, line + process.stderr.read()
        url = line.split("open ")[1].split()[0].rstrip(";")
        with urllib.request.urlopen(url) as response:
            assert b"app.js" in response.read()
            assert response.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        with urllib.request.urlopen(url + "artifact/metadata.json") as response:
            assert json.loads(response.read())["target"] == "onnx"
        host, port = url.split("//")[1].rstrip("/").split(":")
        for path in ("/artifact/../metadata.json", "/node_modules/onnxruntime-web/package.json", "/tests/"):
            connection = HTTPConnection(host, int(port))
            connection.request("GET", path)
            assert connection.getresponse().status == 404, path
            connection.close()
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=30)
    assert "problem:" in errors and "does not match metadata.json" in " ".join(errors.split())


def test_demo_command_refuses_a_missing_folder_or_page(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mixreorg_edge.cli import app

    result = CliRunner().invoke(app, ["demo", "--artifact", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no such folder" in " ".join(result.output.split())
    page = tmp_path / "web"
    page.mkdir()
    for name in ("index.html", "app.js"):
        (page / name).write_text("")
    result = CliRunner().invoke(app, ["demo", "--artifact", str(tmp_path), "--web", str(page)])
    assert result.exit_code == 2 and f"npm ci --prefix {page}" in " ".join(result.output.split())
