"""ONNX Runtime backend."""

from __future__ import annotations

import numpy as np
import pytest

from facegallery.core.config import RuntimeSettings, Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import ModelStore
from facegallery.runtime import ShapeProfile, create_runtime
from facegallery.runtime.onnx import OnnxRuntime

CROP = ShapeProfile((3, 112, 112), (3, 112, 112), (3, 112, 112), 8)


def test_runs_a_batch(settings: Settings) -> None:
    _, recognizer = ModelStore(settings.models).load_configured()
    runtime = create_runtime(recognizer, RuntimeSettings(backend="onnxruntime"), CROP)
    assert isinstance(runtime, OnnxRuntime) and runtime.providers == ["CPUExecutionProvider"]
    out = runtime.run(np.zeros((4, 3, 112, 112), np.float32))
    assert len(out) == 1 and out[0].shape == (4, 128)


def test_missing_provider_is_a_clear_error(settings: Settings) -> None:
    _, recognizer = ModelStore(settings.models).load_configured()
    with pytest.raises(FailedPrecondition, match="TensorrtExecutionProvider"):
        create_runtime(
            recognizer,
            RuntimeSettings(backend="onnxruntime", providers=["TensorrtExecutionProvider"]),
            CROP,
        )
