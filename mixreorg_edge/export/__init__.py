"""Deployment: a run -> a self-describing, parity-checked artifact for one runtime (`artifact.py`), one module per
target behind one interface (`target.py`: executorch, coreml, onnx, openvino, tensorrt), and the inference-time
rewrites the latency benchmarks time (`prepare.py`)."""
