"""Vietnamese speech recognition: Whisper encoder + CTC head on ONNX Runtime."""

__version__ = "0.1.0"
