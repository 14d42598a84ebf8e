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
from facegallery.models.dlib_landmarks import ShapePredictor
from facegallery.models.store import embedding_dimension
from facegallery.runtime import ShapeProfile, create_runtime
from facegallery.vision.align import align_face
from facegallery.vision.decode import decode_image
from facegallery.vision.detect import Detection, Detector, largest
from facegallery.vision.dlib_chip import chip_of_face, dlib_grey
from facegallery.vision.embed import INPUT_SIDE, Embedder, FaceEmbedder, embedding_id
from facegallery.vision.fused import FusedEmbedder, fused_id
from facegallery.vision.quality import Quality, assess_quality
from facegallery.vision.scrfd import ScrfdDetector
from facegallery.vision.sheet import make_sheet
from facegallery.vision.yunet import DIVISOR, YuNetDetector


@dataclass(frozen=True)
class AlignedFace:
    """A detected face with its quality verdict and its aligned (112, 112, 3) BGR crop, or
    the sheet of that crop and dlib's chip (``vision.sheet``) where the Detector makes
    sheets. Quality is measured on the aligned crop either way."""

    detection: Detection
    quality: Quality
    crop: np.ndarray


@dataclass(frozen=True)
class Face:
    """A face as the pipeline reports it. ``embedding``: (D,) unit float32 made by
    ``model_id``, or None when the face was not embedded (failed the gate and not asked for);
    ``crop``: the aligned crop (or sheet) it was (or would be) embedded from, which
    enrollment keeps with ``gallery.keep_crops``."""

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
        self, images: Sequence[bytes | np.ndarray], largest_only: bool = False, sheets: bool = False
    ) -> list[DetectedImage]: ...

    def embed(
        self, faces: list[list[AlignedFace]], embed_rejected: bool = True
    ) -> list[list[Face]]: ...


class FaceFinder:
    """The first half: decode + detector + quality gate + alignment (the Detector
    deployment's whole job); with dlib's ``landmarks`` (``sheet_cutting``), each face's sheet
    where it is wanted: its aligned crop and dlib's chip, cut from the whole image
    (``vision.sheet``), for every call (``sheets_always``: the accurate pack) or for the calls
    that ask (enrollments that keep their crops)."""

    def __init__(
        self,
        detector: Detector,
        settings: Settings,
        landmarks: ShapePredictor | None = None,
        sheets_always: bool = False,
    ) -> None:
        self.detector = detector
        self.settings = settings
        self.landmarks = landmarks
        self.sheets_always = sheets_always

    @property
    def detector_id(self) -> str:
        return self.detector.model_id

    def detect_images(
        self, images: Sequence[bytes | np.ndarray], largest_only: bool = False, sheets: bool = False
    ) -> list[DetectedImage]:
        """Decode each image safely, then detect and align the decodable ones in one batch
        (``sheets``: each face's sheet where this finder can cut one)."""
        decoded: dict[int, np.ndarray] = {}
        answers: dict[int, DetectedImage] = {}
        for i, data in enumerate(images):
            try:
                with timed("decode"):
                    decoded[i] = self.decode(data)
            except FaceGalleryError as exc:
                answers[i] = exc
        found = self.detect_and_align(list(decoded.values()), largest_only, sheets)
        answers.update(zip(decoded, found, strict=True))
        return [answers[i] for i in range(len(images))]

    def decode(self, data: bytes | np.ndarray) -> np.ndarray:
        return decode_image(data, self.settings.decode)

    def detect_and_align(
        self, images: list[np.ndarray], largest_only: bool = False, sheets: bool = False
    ) -> list[list[AlignedFace]]:
        """Faces of each decoded image, gated and aligned (largest first if ``largest_only``;
        as sheets where ``sheets`` or always and this finder has the landmarks)."""
        landmarks = self.landmarks if sheets or self.sheets_always else None
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
                grey = dlib_grey(image) if landmarks is not None and detections else None
                faces = []
                for detection in detections:
                    crop = align_face(image, detection.landmarks)
                    quality = assess_quality(detection, crop, self.settings.quality)
                    if landmarks is not None and grey is not None:
                        crop = make_sheet(crop, chip_of_face(landmarks, image, grey, detection.box))
                    faces.append(AlignedFace(detection, quality, crop))
                results.append(faces)
        return results


class FacePipeline(FaceFinder):
    """Detector + quality gate + alignment + embedder, for one image or a batch."""

    def __init__(
        self,
        detector: Detector,
        embedder: FaceEmbedder,
        settings: Settings,
        landmarks: ShapePredictor | None = None,
        sheets_always: bool = False,
    ) -> None:
        super().__init__(detector, settings, landmarks, sheets_always)
        self.embedder = embedder

    @classmethod
    def from_settings(cls, settings: Settings) -> FacePipeline:
        """Load the configured, already prepared models on the configured runtime."""
        return cls(
            build_detector(ModelStore(settings.models).load_configured()[0], settings),
            build_embedder(settings),
            settings,
            *sheet_cutting(settings),
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
    as one (N, *input_shape) batch (in process, or to the Embedder deployment); with none
    wanted, no call is made."""
    wanted = [f for per_image in faces for f in per_image if embed_rejected or f.quality.passed]
    vectors: dict[int, np.ndarray] = {}
    if wanted:
        found = embed_crops(np.stack([f.crop for f in wanted]))
        vectors = {id(f): v for f, v in zip(wanted, found, strict=True)}
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


def build_embedder(settings: Settings) -> FaceEmbedder:
    """The configured recognizer on the configured runtime: the pack's (fused with its second
    recognizer where it has one) or an operator's own."""
    recognizer, second, model_id = _recognizers(settings)
    first = _recognizer(recognizer, settings)
    if second is None:
        return first
    return FusedEmbedder(first, _recognizer(second, settings), model_id)


def sheet_cutting(settings: Settings) -> tuple[ShapePredictor | None, bool]:
    """The landmark model that cuts dlib's chips where the Detector makes sheets (a pack
    with a second recognizer; kept crops), and whether every face needs its sheet (the
    pack's second recognizer sees the chip) rather than only enrolled ones."""
    store = ModelStore(settings.models)
    branch = store.load_branch()
    if branch is not None:
        return ShapePredictor.load(branch[1].path), True
    if settings.gallery.keep_crops:
        return ShapePredictor.load(store.load_kept_landmarks().path), False
    return None, False


def configured_embedding(settings: Settings) -> tuple[str, int]:
    """The configured embedding's model id and width, read from the prepared files without a
    runtime (what a process that only reads the gallery, such as the metrics exporter,
    needs): the same as ``build_embedder``'s."""
    recognizer, second, model_id = _recognizers(settings)
    extra = 0 if second is None else embedding_dimension(second)
    return model_id, embedding_dimension(recognizer) + extra


def _recognizers(settings: Settings) -> tuple[PreparedModel, PreparedModel | None, str]:
    """The configured recognizer, a fused pack's second network, and the embedding's model
    id (``embedding_id``, or ``fused_id`` over the two networks and the chip's landmarks)."""
    store = ModelStore(settings.models)
    recognizer, branch = store.load_configured()[1], store.load_branch()
    if branch is None:
        return recognizer, None, embedding_id(recognizer.model_id, settings.embed)
    network, landmarks = branch
    ids = (recognizer.model_id, network.model_id, landmarks.model_id)
    return recognizer, network, fused_id(*ids, settings.embed)


def _recognizer(model: PreparedModel, settings: Settings) -> Embedder:
    """One recognizer network on the configured runtime."""
    if model.family not in ("sface", "arcface", "dlib"):
        raise ValueError(f"{model.name} is a {model.family} model, not a recognizer")
    side = INPUT_SIDE[model.family]
    profile = ShapeProfile(
        (3, side, side), (3, side, side), (3, side, side), settings.runtime.max_batch
    )
    runtime = create_runtime(model, settings.runtime, profile)
    return Embedder(runtime, model.family, settings.embed, model.model_id)
