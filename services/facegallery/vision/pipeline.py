"""FacePipeline: the in-process composition of the stages (decode, detect, quality, align,
embed). The CLI, evaluation, tests and the embedded worker call it directly; serving splits the
same two halves (``detect_and_align``, ``embed``) across deployments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from facegallery.core.config import Settings
from facegallery.core.errors import FaceGalleryError
from facegallery.core.telemetry import FACES_PER_IMAGE, timed
from facegallery.models import ModelStore, PreparedModel
from facegallery.runtime import ShapeProfile, create_runtime
from facegallery.vision.align import CROP_SIZE, align_face
from facegallery.vision.decode import decode_image
from facegallery.vision.detect import Detection, Detector, largest
from facegallery.vision.embed import Embedder
from facegallery.vision.quality import Quality, assess_quality
from facegallery.vision.scrfd import ScrfdDetector
from facegallery.vision.yunet import DIVISOR, YuNetDetector


@dataclass(frozen=True)
class AlignedFace:
    """A detected face with its quality verdict and aligned (112, 112, 3) BGR crop."""

    detection: Detection
    quality: Quality
    crop: np.ndarray


@dataclass(frozen=True)
class Face:
    """A face as the pipeline reports it. ``embedding``: (D,) unit float32 made by
    ``model_id``, or None when the face was not embedded (failed the gate and not asked for);
    ``crop``: the aligned crop it was (or would be) embedded from, which enrollment keeps
    with ``gallery.keep_crops``."""

    detection: Detection
    quality: Quality
    embedding: np.ndarray | None
    model_id: str
    crop: np.ndarray | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view without the embedding (callers add it where they mean to)."""
        return {
            **self.detection.to_dict(),
            "quality": self.quality.to_dict(),
            "model_id": self.model_id,
        }


DetectedImage = list[AlignedFace] | FaceGalleryError
"""One image's aligned faces, or why the image could not be decoded."""


class FaceAnalyzer(Protocol):
    """The two halves of the pipeline, as `FaceService` uses them. ``FacePipeline`` runs them
    in process; serving runs them in the Detector and Embedder deployments, batched across
    requests. One image's decoding error is that image's answer, not the batch's."""

    @property
    def model_id(self) -> str: ...

    @property
    def detector_id(self) -> str: ...

    def detect_images(
        self, images: Sequence[bytes | np.ndarray], largest_only: bool = False
    ) -> list[DetectedImage]: ...

    def embed(
        self, faces: list[list[AlignedFace]], embed_rejected: bool = True
    ) -> list[list[Face]]: ...


class FaceFinder:
    """The first half: decode + detector + quality gate + alignment (the Detector
    deployment's whole job)."""

    def __init__(self, detector: Detector, settings: Settings) -> None:
        self.detector = detector
        self.settings = settings

    @property
    def detector_id(self) -> str:
        return self.detector.model_id

    def detect_images(
        self, images: Sequence[bytes | np.ndarray], largest_only: bool = False
    ) -> list[DetectedImage]:
        """Decode each image safely, then detect and align the decodable ones in one batch."""
        decoded: dict[int, np.ndarray] = {}
        answers: dict[int, DetectedImage] = {}
        for i, data in enumerate(images):
            try:
                with timed("decode"):
                    decoded[i] = self.decode(data)
            except FaceGalleryError as exc:
                answers[i] = exc
        found = self.detect_and_align(list(decoded.values()), largest_only)
        answers.update(zip(decoded, found, strict=True))
        return [answers[i] for i in range(len(images))]

    def decode(self, data: bytes | np.ndarray) -> np.ndarray:
        return decode_image(data, self.settings.decode)

    def detect_and_align(
        self, images: list[np.ndarray], largest_only: bool = False
    ) -> list[list[AlignedFace]]:
        """Faces of each decoded image, gated and aligned (largest first if ``largest_only``)."""
        with timed("detect"):
            detected = self.detector.detect(images) if images else []
        results = []
        with timed("align"):
            for image, found in zip(images, detected, strict=True):
                FACES_PER_IMAGE.observe(len(found))
                detections = found
                if largest_only:
                    chosen = largest(found, self.settings.quality.min_detector_score)
                    detections = [chosen] if chosen is not None else []
                faces = []
                for detection in detections:
                    crop = align_face(image, detection.landmarks)
                    quality = assess_quality(detection, crop, self.settings.quality)
                    faces.append(AlignedFace(detection, quality, crop))
                results.append(faces)
        return results


class FacePipeline(FaceFinder):
    """Detector + quality gate + alignment + embedder, for one image or a batch."""

    def __init__(self, detector: Detector, embedder: Embedder, settings: Settings) -> None:
        super().__init__(detector, settings)
        self.embedder = embedder

    @classmethod
    def from_settings(cls, settings: Settings) -> FacePipeline:
        """Load the configured, already prepared models on the configured runtime."""
        detector_model, recognizer_model = ModelStore(settings.models).load_configured()
        return cls(
            build_detector(detector_model, settings),
            build_embedder(recognizer_model, settings),
            settings,
        )

    @property
    def model_id(self) -> str:
        return self.embedder.model_id

    def embed(
        self, faces: list[list[AlignedFace]], embed_rejected: bool = True
    ) -> list[list[Face]]:
        """Embed every face (or only those that passed the gate) in one batched call."""
        return attach_embeddings(faces, embed_rejected, self.model_id, self.embedder.embed)

    def analyze(self, image: bytes | np.ndarray) -> list[Face]:
        """All faces of one image (bytes are decoded safely first)."""
        return self.analyze_batch([self.decode(image)])[0]

    def analyze_batch(
        self, images: list[np.ndarray], largest_only: bool = False, embed_rejected: bool = True
    ) -> list[list[Face]]:
        """Faces of each decoded image, detection and embedding each batched across images."""
        return self.embed(self.detect_and_align(images, largest_only), embed_rejected)


def attach_embeddings(
    faces: list[list[AlignedFace]],
    embed_rejected: bool,
    model_id: str,
    embed_crops: Callable[[np.ndarray], np.ndarray],
) -> list[list[Face]]:
    """The faces with their embeddings: the wanted crops of every image go to ``embed_crops``
    as one (N, 112, 112, 3) batch (in process, or to the Embedder deployment)."""
    wanted = [f for per_image in faces for f in per_image if embed_rejected or f.quality.passed]
    crops = (
        np.stack([f.crop for f in wanted])
        if wanted
        else np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    )
    vectors = {id(f): v for f, v in zip(wanted, embed_crops(crops), strict=True)}
    return [
        [Face(f.detection, f.quality, vectors.get(id(f)), model_id, f.crop) for f in per_image]
        for per_image in faces
    ]


def build_detector(model: PreparedModel, settings: Settings) -> Detector:
    """The detector class for the model's family on the configured runtime."""
    max_batch = settings.runtime.max_batch
    if model.family == "scrfd":
        side = settings.detect.input_size
        fixed = (3, side, side)
        runtime = create_runtime(
            model, settings.runtime, ShapeProfile(fixed, fixed, fixed, max_batch)
        )
        return ScrfdDetector(runtime, settings.detect, max_batch, model.model_id)
    side = ((settings.detect.max_side - 1) // DIVISOR + 1) * DIVISOR
    profile = ShapeProfile((3, DIVISOR, DIVISOR), (3, 480, 640), (3, side, side), max_batch)
    runtime = create_runtime(model, settings.runtime, profile)
    return YuNetDetector(runtime, settings.detect, max_batch, model.model_id)


def build_embedder(model: PreparedModel, settings: Settings) -> Embedder:
    """The embedder for the model's family on the configured runtime."""
    if model.family not in ("sface", "arcface"):
        raise ValueError(f"{model.name} is a {model.family} model, not a recognizer")
    crop = (3, CROP_SIZE, CROP_SIZE)
    profile = ShapeProfile(crop, crop, crop, settings.runtime.max_batch)
    runtime = create_runtime(model, settings.runtime, profile)
    return Embedder(runtime, model.family, settings.embed, model.model_id)
