"""The API's messages as pydantic models: the HTTP API's JSON bodies and OpenAPI schemas, and
the one shape both transports share (and every client returns). They import nothing of the
server; ``serving.convert`` builds them from the domain's answers. Field names and meanings
are those of ``proto/facegallery/v1/facegallery.proto``; gRPC messages convert to and from
these models field by field (``json_format``), and a test checks that every response model
parses into its proto message, so the two cannot drift apart."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from facegallery.core.limits import IMAGES_PER_CALL_MAX, MAX_FPIR
from facegallery.wire.wording import describe_decision, describe_operating_point


def _image_bytes(value: Any) -> bytes:
    """Raw bytes (multipart uploads) pass through; text is base64 (JSON, gRPC via json)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str):
        raise ValueError("image data must be base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"image data is not valid base64 ({exc})") from exc


ImageBytes = Annotated[
    bytes,
    BeforeValidator(_image_bytes),
    PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str),
]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


# A 32x32 gray PNG: the OpenAPI document's example image (fuzzers start from it).
_EXAMPLE_IMAGE = (
    "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAWElEQVRIDbXBAQEAAAABIJ433QpV5KnIU5GnIk9Fno"
    "o8FXkq8lTkqchTkaciT0WeijwVeSryVOSpyFORpyJPRZ6KPBV5KvJU5KnIU5GnIk9Fnoo8FXkq8jSdxDAhMmaq4g"
    "AAAABJRU5ErkJggg=="
)


class Image(Message):
    data: ImageBytes = Field(
        description="The encoded image (JPEG, PNG, WebP), base64 in JSON.",
        examples=[_EXAMPLE_IMAGE],
    )
    name: str = Field(default="", max_length=256)


class Point(Message):
    x: float
    y: float


class Box(Message):
    x1: float
    y1: float
    x2: float
    y2: float


class Quality(Message):
    passed: bool
    score: float
    reasons: list[str]
    face_px: float
    sharpness: float
    brightness: float
    yaw: float
    pitch: float
    roll: float


class Face(Message):
    box: Box
    landmarks: list[Point]
    detector_score: float
    quality: Quality


class Candidate(Message):
    user_id: str
    score: float


class IdentifiedFace(Message):
    face: Face
    searched: bool
    candidates: list[Candidate]
    decision: str
    decision_score: float | None = None

    def describe(self) -> str:
        best = (self.candidates[0].user_id, self.candidates[0].score) if self.candidates else None
        return describe_decision(
            self.searched, self.face.quality.reasons, best, self.decision, self.decision_score
        )


class DetectRequest(Message):
    image: Image


class DetectResponse(Message):
    faces: list[Face]
    model_id: str


_THRESHOLD = "Decide at this cosine threshold instead of the gallery's operating point."
_FPIR = "Target false positive identification rate for this call (default: the gallery's)."


class IdentifyRequest(Message):
    gallery: str
    image: Image
    top_k: int = Field(default=0, ge=0, le=100, description="0: the configured default.")
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, description=_THRESHOLD)
    target_fpir: float | None = Field(default=None, gt=0.0, le=MAX_FPIR, description=_FPIR)


class OperatingPoint(Message):
    method: str
    threshold: float
    target_fpir: float | None = None
    gallery_users: int
    gallery_templates: int
    evidence: int
    calibrated_users: int
    statistic: str

    def describe(self) -> str:
        return describe_operating_point(
            self.statistic, self.threshold, self.method, self.target_fpir, self.gallery_users
        )


class IdentifyResponse(Message):
    faces: list[IdentifiedFace]
    threshold: float
    model_id: str
    operating_point: OperatingPoint


class IdentifyBatchRequest(Message):
    gallery: str
    images: list[Image] = Field(min_length=1, max_length=IMAGES_PER_CALL_MAX)
    top_k: int = Field(default=0, ge=0, le=100)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0, description=_THRESHOLD)
    target_fpir: float | None = Field(default=None, gt=0.0, le=MAX_FPIR, description=_FPIR)


class IdentifyBatchResponse(Message):
    results: list[IdentifyResponse]


class VerifyRequest(Message):
    gallery: str
    user_id: str
    image: Image
    threshold: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Decide at this cosine threshold instead of the model's 1:1 threshold.",
    )


class VerifyResponse(Message):
    gallery: str
    user_id: str
    score: float = Field(
        description="The user's fused score (see fusion): the score identify gives them."
    )
    threshold: float
    match: bool
    face: Face
    fusion: str = Field(
        description="How the score fuses the user's templates: top2_mean (the mean cosine "
        "of their two best templates) or max (their best template)."
    )


class EnrollRequest(Message):
    gallery: str
    user_id: str
    images: list[Image] = Field(min_length=1, max_length=IMAGES_PER_CALL_MAX)
    idempotency_key: str = Field(default="", max_length=128)
    face_index: int | None = Field(default=None, ge=0)


class ImageOutcome(Message):
    image: str
    status: str
    reason: str | None = None
    message: str = ""
    template_id: str | None = None
    warnings: list[str] = []


class JobView(Message):
    job_id: str
    gallery: str
    user_id: str
    status: str = Field(description="queued, running, done or failed")
    images: list[str]
    attempts: int
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    outcomes: list[ImageOutcome] = []
    templates: int = 0

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class EnrollResponse(Message):
    job: JobView


class GetJobRequest(Message):
    job_id: str


class GetJobResponse(Message):
    job: JobView


class WatchJobRequest(Message):
    job_id: str


class WatchJobResponse(Message):
    job: JobView


class ListUsersRequest(Message):
    gallery: str
    page_token: str = ""
    page_size: int = Field(default=0, ge=0, le=1000, description="0: 100.")


class ListUsersResponse(Message):
    user_ids: list[str]
    next_page_token: str = ""


class Template(Message):
    template_id: str
    quality: float
    source: str
    created_at: int


class GetUserRequest(Message):
    gallery: str
    user_id: str


class GetUserResponse(Message):
    user_id: str
    templates: list[Template]
    created_at: int
    updated_at: int


class DeleteUserRequest(Message):
    gallery: str
    user_id: str


class DeleteUserResponse(Message):
    deleted_templates: int


class GalleryStatsRequest(Message):
    gallery: str


class GalleryStatsResponse(Message):
    gallery: str
    users: int
    templates: int


class ErrorDetail(Message):
    code: str = Field(description="The gRPC status code name, e.g. INVALID_ARGUMENT.")
    reason: str = Field(description="A stable machine-readable reason, e.g. invalid_image.")
    message: str = Field(description="What went wrong and what to do about it.")


class ErrorResponse(Message):
    error: ErrorDetail
