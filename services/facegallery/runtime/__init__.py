"""Inference backends behind one protocol, picked by configuration."""

from __future__ import annotations

from facegallery.core.config import RuntimeSettings
from facegallery.models import PreparedModel
from facegallery.runtime.base import InferenceRuntime, ShapeProfile


def create_runtime(
    model: PreparedModel, settings: RuntimeSettings, profile: ShapeProfile
) -> InferenceRuntime:
    """The configured backend for ``model``; ``profile`` bounds the shapes TensorRT accepts."""
    if settings.backend == "tensorrt":
        from facegallery.runtime.tensorrt import TensorRTRuntime

        return TensorRTRuntime(model, settings, profile)
    if settings.backend == "opencv":
        from facegallery.runtime.opencv import OpenCvRuntime

        return OpenCvRuntime(model.path, settings)
    if settings.backend == "openvino":
        from facegallery.runtime.openvino import OpenVinoRuntime

        return OpenVinoRuntime(model.path, settings)
    if settings.backend == "auto":
        from facegallery.runtime.choice import choose_runtime

        return choose_runtime(model, settings, profile)[0]
    from facegallery.runtime.onnx import OnnxRuntime

    return OnnxRuntime(model.path, settings)


__all__ = ["InferenceRuntime", "ShapeProfile", "create_runtime"]
