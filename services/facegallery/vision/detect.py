"""Face detection: what every detector returns, and the work all detectors share.

A detector model class only turns a batch of images into raw detections (``_detect_batch``);
this module adds what is the same for every model: batching to the runtime's limit,
non-maximum suppression, the max-faces cap, and a second look at images where nothing was found
on a padded canvas, because faces that fill the whole frame (tight crops, ID photos) lack the
surrounding context detectors are trained with.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass

import cv2
import numpy as np

from facegallery.core.config import DetectSettings
from facegallery.runtime import InferenceRuntime


@dataclass(frozen=True)
class Detection:
    """One face found in an image, in that image's pixel coordinates.

    ``box``: (4,) float32 x1, y1, x2, y2. ``landmarks``: (5, 2) float32 in the order of the
    ArcFace template: eye, eye, nose tip, mouth corner, mouth corner (image-left first).
    """

    box: np.ndarray
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))

    def to_dict(self) -> dict[str, object]:
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "detector_score": round(self.score, 4),
        }

    def from_canvas(self, scale: float, dx: float, dy: float) -> Detection:
        """This detection mapped from a canvas (the image placed at (dx, dy), then resized by
        ``scale``) back to the image's own pixels."""
        offset = np.array([dx, dy], dtype=np.float32)
        return Detection(
            (self.box / scale - np.tile(offset, 2)).astype(np.float32),
            (self.landmarks / scale - offset).astype(np.float32),
            self.score,
        )


class Detector(ABC):
    """Base of every face detector: ``detect(images) -> faces per image``."""

    def __init__(
        self, runtime: InferenceRuntime, settings: DetectSettings, max_batch: int, model_id: str
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.max_batch = max_batch
        self.model_id = model_id

    def on_runtime(self, runtime: InferenceRuntime) -> Detector:
        """The same detector (settings, id) run by ``runtime``: the precision gate compares
        one model on two runtimes."""
        twin = copy.copy(self)
        twin.runtime = runtime
        return twin

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Faces in each BGR uint8 image, best score first, at most ``max_faces`` each."""
        results: list[list[Detection]] = []
        for start in range(0, len(images), self.max_batch):
            results.extend(self._detect_batch(images[start : start + self.max_batch]))
        if self.settings.tight_crop_padding > 0:
            self._retry_padded(images, results)
        return results

    @abstractmethod
    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Detections for at most ``max_batch`` images, already suppressed and capped."""

    def _retry_padded(self, images: list[np.ndarray], results: list[list[Detection]]) -> None:
        empty = [i for i, faces in enumerate(results) if not faces]
        if not empty:
            return
        padded, placements = [], []
        for i in empty:
            canvas, placement = self._padded_canvas(images[i])
            padded.append(canvas)
            placements.append(placement)
        found: list[list[Detection]] = []
        for start in range(0, len(padded), self.max_batch):
            found.extend(self._detect_batch(padded[start : start + self.max_batch]))
        for i, faces, placement in zip(empty, found, placements, strict=True):
            results[i] = [face.from_canvas(*placement) for face in faces]

    def _padded_canvas(self, image: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
        """``image`` with ``tight_crop_padding`` of black on every side, at most
        ``tight_crop_max_side`` long, and its placement for `Detection.from_canvas`. The image
        is downscaled before it is padded: padding a 24-megapixel frame first would copy it
        into a canvas of four times its pixels (288 MB) only to shrink that to 640 px."""
        h, w = image.shape[:2]
        pad = self.settings.tight_crop_padding
        dy, dx = round(h * pad), round(w * pad)
        scale = min(1.0, self.settings.tight_crop_max_side / max(h + 2 * dy, w + 2 * dx))
        if scale < 1.0:
            image = cv2.resize(
                image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        by, bx = round(dy * scale), round(dx * scale)
        canvas = cv2.copyMakeBorder(image, by, by, bx, bx, cv2.BORDER_CONSTANT, value=0)
        return canvas, (scale, bx / scale, by / scale)

    def _suppress(
        self, boxes: np.ndarray, landmarks: np.ndarray, scores: np.ndarray, scale: float
    ) -> list[Detection]:
        """NMS over raw candidates (boxes x1y1x2y2 in detector pixels), capped, then mapped back
        to the original image by dividing by ``scale``."""
        if len(scores) == 0:
            return []
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        keep = cv2.dnn.NMSBoxes(
            xywh.tolist(),
            scores.tolist(),
            self.settings.score_threshold,
            self.settings.nms_threshold,
        )  # no top_k here: OpenCV applies it before suppression, not after
        order = sorted(np.asarray(keep, dtype=int).reshape(-1), key=lambda k: -scores[k])
        return [
            Detection(
                (boxes[k] / scale).astype(np.float32),
                (landmarks[k] / scale).astype(np.float32),
                float(scores[k]),
            )
            for k in order[: self.settings.max_faces]
        ]


def fit_long_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` downscaled so its long side is at most ``max_side``, and the scale used (1.0
    when it already fits)."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image, scale


def largest(faces: list[Detection], confident_score: float = 0.0) -> Detection | None:
    """The face with the largest box (the protocols' choice of 'the' face in a photo) among
    those scoring at least ``confident_score``; among all faces when none does. A doubtful
    detection (a pattern on a shirt, a poster) must not outrank a clear face by size alone."""
    confident = [f for f in faces if f.score >= confident_score]
    return max(confident or faces, key=lambda f: f.area, default=None)
