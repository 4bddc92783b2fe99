"""Vietnamese speech recognition: Whisper encoder + CTC head on ONNX Runtime."""

__version__ = "0.1.0"
SERVICE_NAME = "vi-asr-serve"  # in /, /models, traces (service.name) and the docs
