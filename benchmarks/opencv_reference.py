"""OpenCV's own face pipeline on the same model files: the baseline every benchmark compares to.

``cv2.FaceDetectorYN`` (YuNet) + ``cv2.FaceRecognizerSF.alignCrop/feature`` (SFace), the input
size set to each image's own size, the largest face taken: the reference pipeline named in
``shared/faces/README.md``. It reads the *shipped* (unprepared) model files, copied out of the
same pinned package by the model store.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from facegallery.core.config import Settings
from facegallery.models.specs import SFACE_2021DEC, YUNET_2023MAR


class OpenCVReference:
    """YuNet + SFace through OpenCV's objdetect API."""

    def __init__(self, settings: Settings, score_threshold: float = 0.9) -> None:
        wheelhouse = settings.models.wheelhouse.expanduser()
        self._dir = tempfile.TemporaryDirectory()
        yunet = YUNET_2023MAR.source.extract(wheelhouse, Path(self._dir.name) / "yunet.onnx")
        sface = SFACE_2021DEC.source.extract(wheelhouse, Path(self._dir.name) / "sface.onnx")
        # OpenCV's defaults for FaceDetectorYN.create: score 0.9, NMS 0.3, top_k 5000.
        self.detector = cv2.FaceDetectorYN.create(
            str(yunet), "", (320, 320), score_threshold, 0.3, 5000
        )
        self.recognizer = cv2.FaceRecognizerSF.create(str(sface), "")

    def detect(self, image: np.ndarray) -> np.ndarray:
        """(K, 15) rows: box x, y, w, h, 5 landmarks, score."""
        self.detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = self.detector.detect(image)
        return faces if faces is not None else np.zeros((0, 15), np.float32)

    def embed_largest(self, image: np.ndarray) -> np.ndarray | None:
        """The unit embedding of the largest face, or None."""
        faces = self.detect(image)
        if len(faces) == 0:
            return None
        face = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
        return self.embed_face(image, face)

    def embed_face(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        crop = self.recognizer.alignCrop(image, face)
        feature = self.recognizer.feature(crop).reshape(-1).astype(np.float32)
        return feature / np.linalg.norm(feature)

    def embed_paths(self, paths: list[Path]) -> list[np.ndarray | None]:
        """Largest-face embeddings of image files read with ``cv2.imread``."""
        out: list[np.ndarray | None] = []
        for path in paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            out.append(None if image is None else self.embed_largest(image))
        return out
