"""`mixreorg-edge demo`: the browser page in `web/` and one exported ONNX artifact, served on localhost.

The page (`web/index.html` + `web/app.js`) runs the artifact with onnxruntime-web from `web/node_modules` (npm, pinned
by `web/package-lock.json`), so it works offline. The server sends the cross-origin isolation headers WebAssembly
threads need. The artifact is checked here as the page checks it, so a problem shows in the terminal too."""

from __future__ import annotations

import json
import shutil
import threading
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
ORT_DIST = "node_modules/onnxruntime-web/dist"
PAGE_FILES = ("index.html", "app.js")
ORT_BUNDLES = ("ort.min.mjs", "ort.wasm.min.mjs")  # web/app.js imports one: with WebGPU, or WebAssembly alone
ARTIFACT_ROUTE = "artifact"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".mjs": "text/javascript",
                 ".wasm": "application/wasm", ".json": "application/json", ".map": "application/json"}
OUTPUT_KINDS = ("labels", "scores", "embeddings")


def find_web_dir(web: Path | None = None) -> Path:
    """The page's folder (default: `web/` of this source checkout), with onnxruntime-web installed in it."""
    folder = Path(web) if web else WEB_DIR
    missing = [name for name in PAGE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the demo page is not in {folder} (no {', '.join(missing)}): run from a clone of "
                                "the repository or pass --web DIR")
    if not all((folder / ORT_DIST / bundle).is_file() for bundle in ORT_BUNDLES):
        raise FileNotFoundError(f"onnxruntime-web is not installed in {folder}: run `npm ci --prefix {folder}` once "
                                "(from the npm registry; the page then works offline)")
    return folder


def artifact_problems(folder: Path) -> list[str]:
    """What keeps the page from running the artifact in `folder` (empty when nothing does): the same checks as
    `web/app.js`, plus loading the model with ONNX Runtime."""
    metadata_path = folder / "metadata.json"
    if not metadata_path.is_file():
        return [f"{folder} is not an exported artifact: it has no metadata.json (make one with "
                "`mixreorg-edge export --target onnx`)"]
    try:
        metadata = json.loads(metadata_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return [f"{metadata_path} is not valid JSON ({error})"]
    if metadata.get("target") != "onnx":
        return [f"{folder} is a {metadata.get('target')} artifact; the page runs ONNX artifacts (export with "
                "--target onnx)"]
    output = metadata.get("output", {}).get("kind")
    if output not in OUTPUT_KINDS:
        return [f"unknown output kind {output!r} in {metadata_path}"]
    model_path = folder / str(metadata.get("model_file"))
    if not model_path.is_file():
        return [f"{folder} has no {metadata.get('model_file')} (the model file metadata.json names)"]
    problems = _model_problems(model_path, metadata)
    if output == "embeddings":
        problems += _vocabulary_problems(folder / metadata.get("vocabulary_file", "vocabulary.json"), metadata)
    return problems


def _model_problems(model_path: Path, metadata: dict) -> list[str]:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - any load failure is the message
        return [f"ONNX Runtime cannot load {model_path}: {error}"]
    inputs = {item.name: item.shape for item in session.get_inputs()}
    outputs = [item.name for item in session.get_outputs()]
    wanted_input, wanted_output = metadata["input"]["name"], metadata["output"]["name"]
    if wanted_input not in inputs or wanted_output not in outputs:
        return [f"{model_path.name} does not match metadata.json: the model takes {list(inputs)} and gives "
                f"{outputs}; metadata.json says {wanted_input} -> {wanted_output}"]
    shape = inputs[wanted_input]
    if [dim for dim in shape if isinstance(dim, int)] and list(shape) != list(metadata["input"]["shape"]):
        return [f"{model_path.name} does not match metadata.json: its input is {list(shape)}, metadata.json says "
                f"{metadata['input']['shape']}"]
    return []


def _vocabulary_problems(path: Path, metadata: dict) -> list[str]:
    if not path.is_file():
        return [f"an embeddings artifact needs its vocabulary file: {path} is missing"]
    vocabulary = json.loads(path.read_text())
    dim = metadata["output"]["shape"][1]
    if vocabulary.get("embed_dim") != dim:
        return [f"{path.name} has {vocabulary.get('embed_dim')}-dimensional embeddings; the model outputs {dim}"]
    return []


class DemoHandler(BaseHTTPRequestHandler):
    """GET of the page's files, onnxruntime-web's `dist/` files and the artifact's files; nothing else."""

    web: Path
    artifact: Path

    def _resolve(self) -> Path | None:
        path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        if path in PAGE_FILES:
            return self.web / path
        folder, _, name = path.rpartition("/")
        roots = {ORT_DIST: self.web / ORT_DIST, ARTIFACT_ROUTE: self.artifact}
        if folder in roots and name and name not in (".", ".."):
            return roots[folder] / name
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._send(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(body=False)

    def _send(self, body: bool) -> None:
        target = self._resolve()
        if target is None or not target.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", CONTENT_TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(target.stat().st_size))
        self.send_header("Cache-Control", "no-store")
        # cross-origin isolation: SharedArrayBuffer, hence WebAssembly threads
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.end_headers()
        if body:
            with target.open("rb") as source:
                shutil.copyfileobj(source, self.wfile)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet: the command prints the address and any problem


def make_server(artifact: Path, web: Path | None = None, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server for the page and `artifact` (port 0: a free one); `serve_forever()` runs it."""
    handler = type("Handler", (DemoHandler,), {"web": find_web_dir(web), "artifact": Path(artifact).resolve()})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def address(server: ThreadingHTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}/"


@contextmanager
def running_demo(artifact: Path, web: Path | None = None) -> Iterator[str]:
    """The demo served on a free localhost port in a background thread, for tests and benchmarks; yields its URL."""
    server = make_server(artifact, web, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield address(server)
    finally:
        server.shutdown()
        server.server_close()
