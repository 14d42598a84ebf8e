"""OpenVINO backend: Intel's CPU runtime over the same prepared ONNX files.

On an AMD EPYC it runs the shipped SFace recognizer at fp32 1.6-1.9x OpenCV's DNN (the
fastest backend there before it) and at bf16 2.6-3.2x (batches of 1 and 4;
docs/benchmarks.md), so ``runtime.backend: auto`` measures it beside ONNX Runtime and
OpenCV. It runs at the precision it is built with, and that precision is part of the
backend's identity (``openvino`` is fp32, the outputs of the model id; ``openvino-bf16``
changes them and is only a candidate where the precision gate passed: ``runtime.gates``).
Dynamic shapes come from the model (batch, and the detector's canvas). An infer request must
not run two batches at once, so calls are serialised; compiled models are cached in
``runtime.engine_dir``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx

from facegallery.core.config import RuntimeSettings
from facegallery.core.errors import FailedPrecondition

PRECISIONS = ("f32", "bf16")


class OpenVinoRuntime:
    """One compiled model on OpenVINO's CPU plugin, outputs in the model's order."""

    def __init__(self, path: Path, settings: RuntimeSettings, precision: str = "f32") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise FailedPrecondition(
                f"OpenVINO is not installed ({exc}): pip install 'facegallery[server]'"
            ) from None
        if precision not in PRECISIONS:
            raise FailedPrecondition(f"OpenVINO precision {precision!r}: one of {PRECISIONS}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property(
            "CPU", "OPTIMIZATION_CAPABILITIES"
        ):
            raise FailedPrecondition("this CPU has no bf16 support for OpenVINO")
        config: dict[str, object] = {
            "INFERENCE_PRECISION_HINT": precision,
            "PERFORMANCE_HINT": "LATENCY",
            "CACHE_DIR": str(settings.engine_dir / "openvino"),
        }
        if settings.intra_op_threads:
            config["INFERENCE_NUM_THREADS"] = settings.intra_op_threads
        try:
            self.compiled = core.compile_model(str(path), "CPU", config)
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "no reason"
            raise FailedPrecondition(
                f"OpenVINO cannot run {path.name} ({reason}); "
                "use runtime.backend onnxruntime (or auto, which skips it)"
            ) from None
        # The model's own output names, in its order (a compiled output may carry several
        # names, and get_any_name() picks any of them).
        self.output_names = [
            o.name for o in onnx.load(str(path), load_external_data=False).graph.output
        ]
        by_name = {name: o for o in self.compiled.outputs for name in o.get_names()}
        missing = [name for name in self.output_names if name not in by_name]
        if missing:
            raise FailedPrecondition(f"OpenVINO lost outputs {missing} of {path.name}")
        self.outputs = [by_name[name] for name in self.output_names]
        self.precision = precision
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            try:
                # share_inputs: OpenVINO reads the batch where it lies instead of copying it
                # first (a 6-photo detector batch is 22 MB: about 2 ms a call saved here)
                results = self._request.infer(
                    [np.ascontiguousarray(batch, dtype=np.float32)], share_inputs=True
                )
            except RuntimeError as exc:  # a shape or an operator it cannot run
                reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "?"
                raise FailedPrecondition(f"OpenVINO cannot run this input: {reason}") from None
            return [np.asarray(results[o]) for o in self.outputs]  # infer() returns copies
