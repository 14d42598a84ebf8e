"""ONNX Runtime backend: the CPU default, and the CUDA provider where onnxruntime-gpu is in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from facegallery.core.config import RuntimeSettings
from facegallery.core.errors import FailedPrecondition


class OnnxRuntime:
    """An ``InferenceSession`` over one prepared model file."""

    def __init__(self, path: Path, settings: RuntimeSettings) -> None:
        available = ort.get_available_providers()
        providers = [p for p in settings.providers if p in available]
        if not providers:
            raise FailedPrecondition(
                f"none of the configured ONNX Runtime providers {settings.providers} is "
                f"available here (available: {available})"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if settings.intra_op_threads:
            options.intra_op_num_threads = settings.intra_op_threads
        spin = "1" if settings.ort_spin_wait else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.input_name: str = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.providers: list[str] = self.session.get_providers()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        outputs = self.session.run(self.output_names, {self.input_name: batch})
        return [np.asarray(o) for o in outputs]
