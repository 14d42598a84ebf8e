"""FaceService: the product's answers (enroll, verify, identify) over pipeline, gallery and
thresholds. The CLI calls it in-process; the serving gateway and the enrollment workers call
the same methods, so the rules below hold whichever way a request arrives."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from facegallery.core import ids
from facegallery.core.config import Settings
from facegallery.core.deadline import check_deadline
from facegallery.core.errors import FaceGalleryError, FailedPrecondition, InvalidInput, NotFound
from facegallery.core.telemetry import BEST_SCORE, ENROLL_IMAGES, IDENTIFY_FACES, timed
from facegallery.decisions.openset import OpenSetCalibrator, OperatingPoint
from facegallery.decisions.thresholds import (
    Identification,
    Thresholds,
    Verification,
    decide,
)
from facegallery.gallery import Gallery, GalleryStats, NewTemplate, Template, User
from facegallery.gallery.fusion import user_score
from facegallery.gallery.policy import templates_to_keep
from facegallery.service.enrollment import EnrollOutcome, EnrollResult, Fence, ImageInput
from facegallery.vision.pipeline import Face, FaceAnalyzer, FacePipeline
from facegallery.vision.quality import Quality
from facegallery.wire.wording import SCORE, UNKNOWN

_T = TypeVar("_T")


@dataclass(frozen=True)
class Identified:
    """The faces found in each image, in order, and the operating point they were decided at."""

    images: list[list[Identification]]
    operating_point: OperatingPoint


@dataclass
class _Accepted:
    """An enrollment face that passed the per-image checks."""

    index: int
    template: NewTemplate
    quality: Quality
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Kept:
    """The per-user cap's verdict: templates after the write, stored ones to evict, new ones
    to store."""

    count: int
    evicted: list[Template]
    new_ids: set[str]


class FaceService:
    """Enroll, verify, identify; users, delete, stats."""

    def __init__(
        self, pipeline: FaceAnalyzer, gallery: Gallery, thresholds: Thresholds, settings: Settings
    ) -> None:
        self.pipeline = pipeline
        self.gallery = gallery
        self.thresholds = thresholds
        self.settings = settings
        self.openset = OpenSetCalibrator(gallery, thresholds, settings.matching)

    @classmethod
    def from_settings(cls, settings: Settings) -> FaceService:
        pipeline = FacePipeline.from_settings(settings)
        gallery = Gallery(settings.gallery, pipeline.model_id, pipeline.embedder.dimension)
        return cls(pipeline, gallery, Thresholds(settings.matching), settings)

    @property
    def model_id(self) -> str:
        return self.pipeline.model_id

    def enroll(
        self,
        gallery: str,
        user_id: str,
        images: list[ImageInput],
        face_index: int | None = None,
        fence: Fence = lambda: None,
    ) -> EnrollResult:
        """Add a user's faces: one face per image (or the ``face_index``-th, in `detect`
        order), gated on quality, checked against other users, capped per user. ``fence``
        is called before each write to the gallery and raises to stop it (a queue worker
        whose lease is gone)."""
        gallery, user_id = ids.gallery_id(gallery), ids.user_id(user_id)
        if not images:
            raise InvalidInput("enrollment needs at least one image")
        if face_index is not None and face_index < 0:
            raise InvalidInput(f"face_index must be 0 or more, got {face_index}")
        outcomes: dict[int, EnrollOutcome] = {}
        accepted: list[_Accepted] = []
        for i, (image, faces) in enumerate(
            zip(images, self._analyze(images, outcomes), strict=True)
        ):
            if i in outcomes:
                continue
            picked = _pick_face(image.name, faces, face_index)
            if isinstance(picked, EnrollOutcome):
                outcomes[i] = picked
                continue
            face, index = picked
            if not face.quality.passed:
                outcomes[i] = EnrollOutcome(
                    image.name,
                    False,
                    "low_quality",
                    "face rejected by the quality gate: " + ", ".join(face.quality.reasons),
                    quality=face.quality,
                )
                continue
            assert face.embedding is not None
            template_id = _template_id(gallery, user_id, image.data, index)
            new = NewTemplate(
                template_id, face.embedding, face.quality.score, image.name, face.crop
            )
            accepted.append(_Accepted(i, new, face.quality))
        self._check_duplicates(gallery, user_id, accepted, outcomes)
        accepted = [a for a in accepted if a.index not in outcomes]
        kept = self._apply_cap(gallery, user_id, [a.template for a in accepted])
        evicted = [t.template_id for t in kept.evicted]
        kept_new = kept.new_ids
        for a in accepted:
            if a.template.template_id in kept_new:
                outcomes[a.index] = EnrollOutcome(
                    images[a.index].name,
                    True,
                    template_id=a.template.template_id,
                    message="enrolled",
                    warnings=a.warnings,
                    quality=a.quality,
                )
            else:
                outcomes[a.index] = EnrollOutcome(
                    images[a.index].name,
                    False,
                    "redundant",
                    f"the user keeps their {self.settings.gallery.max_templates_per_user} best, "
                    "most diverse templates; this face adds less than those",
                )
        with timed("upsert"):
            fence()
            self.gallery.add(
                gallery,
                user_id,
                [a.template for a in accepted if a.template.template_id in kept_new],
            )
            if evicted:
                fence()
                self.gallery.delete_templates(gallery, user_id, evicted)
        for outcome in outcomes.values():
            ENROLL_IMAGES.labels(
                "enrolled" if outcome.enrolled else "rejected", outcome.reason or ""
            ).inc()
        return EnrollResult(
            gallery,
            user_id,
            [outcomes[i] for i in range(len(images))],
            kept.count,
            evicted,
        )

    def verify(
        self, gallery: str, user_id: str, image: bytes | np.ndarray, threshold: float | None = None
    ) -> Verification:
        """Is the probe's largest face the claimed user? The score is the user's fused score
        (``gallery.fusion``: by default the mean cosine of their two best templates), the
        one identify gives them; the best template alone would be tried against the 1:1
        threshold once per template, and accept strangers up to that many times as often
        as the threshold's FAR says. A probe face that fails the quality gate never
        matches."""
        gallery, user_id = ids.gallery_id(gallery), ids.user_id(user_id)
        limit = self.thresholds.threshold(self.model_id, threshold)
        templates = self.gallery.templates(gallery, user_id)
        if not templates:
            raise _not_enrolled(gallery, user_id)
        faces = _or_raise(self.analyze([image], largest_only=True)[0])
        if not faces or faces[0].embedding is None:
            raise InvalidInput("no face found in the probe image")
        face = faces[0]
        fusion = self.settings.gallery.fusion
        cosines = np.stack([t.embedding for t in templates]) @ face.embedding
        score = user_score(cosines, fusion)
        return Verification(
            gallery,
            user_id,
            score,
            limit,
            score >= limit and face.quality.passed,
            face.detection,
            face.quality,
            fusion,
        )

    def identify(
        self,
        gallery: str,
        image: bytes | np.ndarray,
        top_k: int | None = None,
        threshold: float | None = None,
        fpir: float | None = None,
    ) -> list[Identification]:
        """Every face of the image: candidates (one per user) and a decision. Faces that fail
        the quality gate are reported with their reasons and not searched."""
        return self.identify_batch(gallery, [image], top_k, threshold, fpir).images[0]

    def identify_batch(
        self,
        gallery: str,
        images: Sequence[bytes | np.ndarray],
        top_k: int | None = None,
        threshold: float | None = None,
        fpir: float | None = None,
    ) -> Identified:
        """`identify` for several images (frames of one camera): one detection batch, one
        embedding batch and one gallery search for all their faces. An undecodable image
        fails the call, naming it. Decided at the gallery's operating point for the target
        FPIR (``fpir``, else the gallery's, else the default) unless ``threshold`` is given."""
        gallery = ids.gallery_id(gallery)
        top_k = self.settings.gallery.top_k if top_k is None else top_k
        if not 1 <= top_k <= 100:
            raise InvalidInput(f"top_k must be between 1 and 100, got {top_k}")
        point = self.openset.operating_point(gallery, fpir, threshold)
        limit = point.threshold
        found = self.analyze(images, embed_rejected=False)
        per_image = [
            _or_raise(f, f"image {i}: " if len(images) > 1 else "") for i, f in enumerate(found)
        ]
        vectors = [f.embedding for faces in per_image for f in faces if f.embedding is not None]
        check_deadline("gallery")  # a search nobody will read is not made
        with timed("search"):
            probes = np.array(vectors)
            hits = iter(self.openset.search(gallery, probes, point, top_k) if vectors else [])
        answers = []
        for faces in per_image:
            answer = []
            for face in faces:
                if face.embedding is not None:  # embedded exactly when it passed the gate
                    candidates, value = next(hits)
                    decision = decide(candidates, value, limit)
                    IDENTIFY_FACES.labels(
                        gallery, "unknown" if decision == UNKNOWN else "matched"
                    ).inc()
                    if candidates:
                        BEST_SCORE.observe(candidates[0].score)
                    answer.append(
                        Identification(
                            face.detection, face.quality, candidates, decision, True, value
                        )
                    )
                else:
                    answer.append(Identification(face.detection, face.quality))
            answers.append(answer)
        return Identified(answers, point)

    def detect(self, image: bytes | np.ndarray) -> list[Face]:
        """Faces of one image with their quality verdicts; nothing is embedded or searched."""
        found = _or_raise(self.pipeline.detect_images([image])[0])
        return [Face(f.detection, f.quality, None, self.model_id, f.crop) for f in found]

    def analyze(
        self,
        images: Sequence[bytes | np.ndarray],
        largest_only: bool = False,
        embed_rejected: bool = True,
        sheets: bool = False,
    ) -> list[list[Face] | FaceGalleryError]:
        """Faces of each image (or why it could not be decoded): detection batched across
        the images, then one embedding batch for all their faces (``sheets``: each face's
        sheet, to keep, where the pipeline cuts them)."""
        found = self.pipeline.detect_images(images, largest_only, sheets)
        decodable = [f for f in found if not isinstance(f, FaceGalleryError)]
        embedded = iter(self.pipeline.embed(decodable, embed_rejected))
        return [f if isinstance(f, FaceGalleryError) else next(embedded) for f in found]

    def users(self, gallery: str, after: str | None = None, limit: int = 100) -> list[str]:
        return self.gallery.users(gallery, after, limit)

    def templates(self, gallery: str, user_id: str) -> list[Template]:
        return self.gallery.templates(gallery, user_id)

    def get_user(self, gallery: str, user_id: str) -> User:
        return self.gallery.get_user(gallery, user_id)

    def delete_user(self, gallery: str, user_id: str) -> int:
        deleted = self.gallery.delete_user(gallery, user_id)
        if deleted == 0:
            raise _not_enrolled(gallery, user_id)
        return deleted

    def stats(self, gallery: str) -> GalleryStats:
        return self.gallery.stats(gallery)

    def _analyze(
        self, images: list[ImageInput], outcomes: dict[int, EnrollOutcome]
    ) -> list[list[Face]]:
        """Faces of every decodable image; undecodable ones get their outcome now. Images
        are decoded ``decode.images_at_once`` at a time: a job's decoded pixels, not its
        encoded bytes, are what fills memory (50 large JPEGs decoded at once are gigabytes)."""
        answers: list[list[Face]] = []
        step = self.settings.decode.images_at_once
        for start in range(0, len(images), step):
            chunk = [im.data for im in images[start : start + step]]
            found_all = self.analyze(chunk, embed_rejected=False, sheets=self.gallery.keeps_sheets)
            for i, found in enumerate(found_all, start):
                if isinstance(found, FaceGalleryError):
                    outcomes[i] = EnrollOutcome(
                        images[i].name, False, "invalid_image", found.message
                    )
                answers.append([] if isinstance(found, FaceGalleryError) else found)
        return answers

    def _check_duplicates(
        self,
        gallery: str,
        user_id: str,
        accepted: list[_Accepted],
        outcomes: dict[int, EnrollOutcome],
    ) -> None:
        """A new face that identify would match to a *different* user (at the gallery's
        operating point) is a warning (or a refusal)."""
        if not accepted:
            return
        try:
            point = self.openset.operating_point(gallery)
        except FailedPrecondition:
            for a in accepted:
                a.warnings.append("no threshold for this model: duplicate identities not checked")
            return
        probes = np.stack([a.template.embedding for a in accepted])
        found = self.openset.impostor_decisions(
            gallery, [user_id] * len(accepted), probes, point.statistic
        )
        for a, (other, value) in zip(accepted, found, strict=True):
            if other is None or value < point.threshold:
                continue
            on = "score" if point.statistic == SCORE else f"{point.statistic} {value:.3f}, score"
            message = (
                f"this face already matches user {other.user_id!r} "
                f"({on} {other.score:.3f}; threshold {point.threshold:.3f})"
            )
            if self.settings.matching.duplicate_identity == "refuse":
                outcomes[a.index] = EnrollOutcome(
                    a.template.source, False, "duplicate_identity", message
                )
            else:
                a.warnings.append("duplicate_identity: " + message)

    def _apply_cap(self, gallery: str, user_id: str, new: list[NewTemplate]) -> _Kept:
        """Which stored templates to evict and which new ones to keep, under the per-user cap."""
        existing = {t.template_id: t for t in self.gallery.templates(gallery, user_id)}
        pool = list(existing.values()) + [
            Template(t.template_id, user_id, t.embedding, t.quality, t.source, 0)
            for t in new
            if t.template_id not in existing
        ]
        kept = {
            t.template_id
            for t in templates_to_keep(pool, self.settings.gallery.max_templates_per_user)
        }
        return _Kept(
            count=len(kept),
            evicted=[t for tid, t in existing.items() if tid not in kept],
            new_ids={t.template_id for t in new if t.template_id in kept},
        )


def _pick_face(
    name: str, faces: list[Face], face_index: int | None
) -> EnrollOutcome | tuple[Face, int]:
    """The face to enroll from one image, or the rejection saying why there is none."""
    if not faces:
        return EnrollOutcome(name, False, "no_face", "no face found in the image")
    if face_index is None:
        if len(faces) > 1:
            return EnrollOutcome(
                name,
                False,
                "multiple_faces",
                f"{len(faces)} faces found; pass face_index to choose one "
                "(0 = the first face `facegallery detect` lists)",
            )
        return faces[0], 0
    if face_index >= len(faces):
        return EnrollOutcome(
            name,
            False,
            "no_such_face",
            f"face_index {face_index} but only {len(faces)} face(s) found",
        )
    return faces[face_index], face_index


def _or_raise(found: list[_T] | FaceGalleryError, prefix: str = "") -> list[_T]:
    """An image's faces, or its decoding error raised (with ``prefix`` naming the image)."""
    if isinstance(found, FaceGalleryError):
        if prefix:
            raise type(found)(prefix + found.message, found.retry_after_s) from found
        raise found
    return found


def _not_enrolled(gallery: str, user_id: str) -> NotFound:
    return NotFound(f"user {user_id!r} is not enrolled in gallery {gallery!r}")


def _template_id(gallery: str, user_id: str, data: bytes | np.ndarray, face_index: int) -> str:
    """Deterministic: the same face of the same image for the same user is the same template,
    so a retried enrollment overwrites instead of duplicating."""
    if isinstance(data, np.ndarray):
        content = hashlib.sha256(str(data.shape).encode() + np.ascontiguousarray(data).tobytes())
    else:
        content = hashlib.sha256(bytes(data))
    key = f"{gallery}\0{user_id}\0{content.hexdigest()}\0{face_index}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]
