"""YuNet (2023mar): an anchor-free detector with 5 landmarks, at any input size.

Input: raw BGR 0-255, the canvas padded to a multiple of 32. Outputs per stride s in (8, 16, 32):
``cls``, ``obj`` (score = sqrt(cls * obj)), ``bbox`` (cx, cy offsets in cells and log w, h in
strides) and ``kps`` (5 points as cell offsets), as OpenCV's ``FaceDetectorYN`` decodes them.
"""

from __future__ import annotations

import numpy as np

from facegallery.vision.detect import Detection, Detector, fit_long_side

STRIDES = (8, 16, 32)
DIVISOR = 32


class YuNetDetector(Detector):
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        fitted = (fit_long_side(image, self.settings.max_side) for image in images)
        scaled, scales = zip(*fitted, strict=True)
        height = _round_up(max(s.shape[0] for s in scaled))
        width = _round_up(max(s.shape[1] for s in scaled))
        batch = np.zeros((len(scaled), 3, height, width), dtype=np.float32)
        for i, image in enumerate(scaled):
            batch[i, :, : image.shape[0], : image.shape[1]] = image.transpose(2, 0, 1)
        outputs = dict(zip(self.runtime.output_names, self.runtime.run(batch), strict=True))
        return [self._decode(outputs, i, height, width, scale) for i, scale in enumerate(scales)]

    def _decode(
        self, outputs: dict[str, np.ndarray], i: int, height: int, width: int, scale: float
    ) -> list[Detection]:
        boxes, points, scores = [], [], []
        for stride in STRIDES:
            cols = width // stride
            cls = np.clip(outputs[f"cls_{stride}"][i, :, 0], 0.0, 1.0)
            obj = np.clip(outputs[f"obj_{stride}"][i, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            idx = np.flatnonzero(score >= self.settings.score_threshold)
            if idx.size == 0:
                continue
            cell = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)
            bbox = outputs[f"bbox_{stride}"][i, idx]
            centre = (cell + bbox[:, :2]) * stride
            size = np.exp(bbox[:, 2:4]) * stride
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            kps = outputs[f"kps_{stride}"][i, idx].reshape(-1, 5, 2)
            points.append((kps + cell[:, None, :]) * stride)
            scores.append(score[idx])
        if not scores:
            return []
        return self._suppress(
            np.concatenate(boxes), np.concatenate(points), np.concatenate(scores), scale
        )


def _round_up(value: int) -> int:
    return ((value - 1) // DIVISOR + 1) * DIVISOR
