"""OpenCV DNN backend (``cv2.dnn``) over the same prepared ONNX files.

On some CPUs it runs a model faster than ONNX Runtime (this project measured SFace at 79-110
faces/s under cv2.dnn against 54-63 under ORT on an AMD EPYC), so it is a third backend that
``runtime.backend: auto`` measures. OpenCV 5.0 runs the shipped YuNet, SFace, SCRFD and
ArcFace files (outputs within 1e-3 of ORT's), but its importer lacks some operators (e.g.
Hardmax): a model or input it cannot run is a clear ``FailedPrecondition``.
A ``cv2.dnn.Net`` must not run two batches at once, so calls are serialised.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import onnx

from facegallery.core.config import RuntimeSettings
from facegallery.core.errors import FailedPrecondition


class OpenCvRuntime:
    """A ``cv2.dnn.Net`` over one prepared model file, outputs in the model's order."""

    def __init__(self, path: Path, settings: RuntimeSettings) -> None:
        graph = onnx.load(str(path), load_external_data=False).graph
        self.output_names = [o.name for o in graph.output]
        try:
            self.net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise FailedPrecondition(_refusal(path, exc)) from None
        self.threads = settings.intra_op_threads
        self.path = path
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            if self.threads and cv2.getNumThreads() != self.threads:
                # OpenCV's pool is process-wide: set it for this net's run, since another
                # net (or the trial of another thread count) may have set it otherwise.
                cv2.setNumThreads(self.threads)
            try:
                self.net.setInput(np.ascontiguousarray(batch, dtype=np.float32))
                outputs = self.net.forward(self.output_names)
            except cv2.error as exc:
                raise FailedPrecondition(_refusal(self.path, exc)) from None
        return [np.array(o) for o in outputs]


def _refusal(path: Path, exc: cv2.error) -> str:
    reason = str(exc).strip().splitlines()[-1][:200]
    return (
        f"OpenCV DNN cannot run {path.name} ({reason}); "
        "use runtime.backend onnxruntime (or auto, which skips it)"
    )
