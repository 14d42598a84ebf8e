"""SCRFD (InsightFace): an anchor-based detector with 5 landmarks on a fixed square canvas.

Input: RGB, (x - 127.5) / 128, letterboxed into ``input_size`` x ``input_size`` (aspect kept,
padded bottom/right). Outputs per stride s in (8, 16, 32), two anchors per cell: sigmoid
``score``, ``bbox`` as distances (left, top, right, bottom) and ``kps`` as offsets from the
anchor centre, both in units of s (Guo et al., "Sample and Computation Redistribution for
Efficient Face Detection", 2021).
"""

from __future__ import annotations

import cv2
import numpy as np

from facegallery.core.config import DetectSettings
from facegallery.runtime import InferenceRuntime
from facegallery.vision.detect import Detection, Detector

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


class ScrfdDetector(Detector):
    def __init__(
        self, runtime: InferenceRuntime, settings: DetectSettings, max_batch: int, model_id: str
    ) -> None:
        super().__init__(runtime, settings, max_batch, model_id)
        self.size = settings.input_size
        self._centres = {s: _anchor_centres(self.size, s) for s in STRIDES}

    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        batch = np.zeros((len(images), 3, self.size, self.size), dtype=np.float32)
        scales = []
        for i, image in enumerate(images):
            scale = self.size / max(image.shape[:2])
            h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
            resized = cv2.resize(image, (min(w, self.size), min(h, self.size)))
            rgb = resized[:, :, ::-1].transpose(2, 0, 1).astype(np.float32)
            batch[i, :, : rgb.shape[1], : rgb.shape[2]] = (rgb - 127.5) / 128.0
            scales.append(scale)
        outputs = dict(zip(self.runtime.output_names, self.runtime.run(batch), strict=True))
        return [self._decode(outputs, i, scale) for i, scale in enumerate(scales)]

    def _decode(self, outputs: dict[str, np.ndarray], i: int, scale: float) -> list[Detection]:
        boxes, points, scores = [], [], []
        for stride in STRIDES:
            score = outputs[f"score_{stride}"][i, :, 0]
            idx = np.flatnonzero(score >= self.settings.score_threshold)
            if idx.size == 0:
                continue
            centre = self._centres[stride][idx]
            dist = outputs[f"bbox_{stride}"][i, idx] * stride
            boxes.append(np.concatenate([centre - dist[:, :2], centre + dist[:, 2:]], axis=1))
            kps = outputs[f"kps_{stride}"][i, idx].reshape(-1, 5, 2) * stride
            points.append(kps + centre[:, None, :])
            scores.append(score[idx])
        if not scores:
            return []
        return self._suppress(
            np.concatenate(boxes), np.concatenate(points), np.concatenate(scores), scale
        )


def _anchor_centres(size: int, stride: int) -> np.ndarray:
    """(cells * anchors, 2) x, y of every anchor, row-major, each cell's anchors adjacent."""
    cells = size // stride
    ys, xs = np.mgrid[:cells, :cells]
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)
