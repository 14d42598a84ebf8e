"""TensorRT backend: runs only where TensorRT and a GPU exist (never on CI's CPU machines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facegallery.core.config import RuntimeSettings, Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import ModelStore
from facegallery.runtime import ShapeProfile, create_runtime
from facegallery.runtime.tensorrt import tensorrt_unavailable_reason

REASON = tensorrt_unavailable_reason()
CROP = ShapeProfile((3, 112, 112), (3, 112, 112), (3, 112, 112), 8)


def test_unavailable_backend_is_a_clear_error(settings: Settings) -> None:
    if REASON is None:
        pytest.skip("TensorRT is available here")
    _, recognizer = ModelStore(settings.models).load_configured()
    with pytest.raises(FailedPrecondition, match="TensorRT"):
        create_runtime(recognizer, RuntimeSettings(backend="tensorrt"), CROP)


@pytest.mark.skipif(REASON is not None, reason=REASON or "")
def test_fp16_engine_matches_onnx_runtime(settings: Settings, tmp_path: Path) -> None:
    _, recognizer = ModelStore(settings.models).load_configured()
    trt_settings = RuntimeSettings(backend="tensorrt", engine_dir=tmp_path, max_batch=8)
    engine = create_runtime(recognizer, trt_settings, CROP)
    reference = create_runtime(recognizer, settings.runtime, CROP)
    batch = np.random.default_rng(0).uniform(0, 255, (5, 3, 112, 112)).astype(np.float32)
    a, b = engine.run(batch)[0], reference.run(batch)[0]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.999
