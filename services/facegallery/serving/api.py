"""The servicer layer: every API operation, once. The HTTP routes and the gRPC methods of the
gateway both hand a request (as a dict of the schema's fields) and the caller's API key to
`Api.call`, which validates, authorizes, runs the operation on `FaceService` / the enrollment
queue, counts it, and answers with a schema model or raises a `FaceGalleryError`. Whatever else
goes wrong is logged here with its traceback and reaches the caller as one line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from facegallery.auth import ADMIN, ApiKey, KeyStore, Role
from facegallery.config import Settings
from facegallery.errors import FaceGalleryError, InvalidInput
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.metrics import GALLERY_SIZE, QUEUE_JOBS, REQUEST_SECONDS, REQUESTS, exposition
from facegallery.service import FaceService, ImageInput
from facegallery.serving import schemas as s

log = logging.getLogger(__name__)


def _named_gallery(request: Any) -> str | None:
    return str(request.gallery)


@dataclass(frozen=True)
class Operation:
    """One API operation: its request model, the role it needs, the gallery it touches (the
    key must be valid for it; None: no gallery), and what it does."""

    request: type[BaseModel]
    role: Role
    run: Callable[[Any], BaseModel]
    gallery: Callable[[Any], str | None] = _named_gallery


class Api:
    """Every operation of the API over one `FaceService` and one enrollment queue."""

    def __init__(
        self,
        service: FaceService,
        queue: EnrollmentQueue,
        keys: KeyStore | None,
        settings: Settings,
    ) -> None:
        self.service = service
        self.queue = queue
        self.keys = keys  # None: authentication switched off (local demo)
        self.settings = settings
        self.galleries_seen: set[str] = set()
        self.operations: dict[str, Operation] = {
            "detect": Operation(s.DetectRequest, "read", self._detect, lambda r: None),
            "identify": Operation(s.IdentifyRequest, "read", self._identify),
            "identify_batch": Operation(s.IdentifyBatchRequest, "read", self._identify_batch),
            "verify": Operation(s.VerifyRequest, "read", self._verify),
            "enroll": Operation(s.EnrollRequest, "write", self._enroll),
            "get_job": Operation(
                s.GetJobRequest, "read", self._get_job, lambda r: self.queue.get(r.job_id).gallery
            ),
            "list_users": Operation(s.ListUsersRequest, "read", self._list_users),
            "get_user": Operation(s.GetUserRequest, "read", self._get_user),
            "delete_user": Operation(s.DeleteUserRequest, "write", self._delete_user),
            "gallery_stats": Operation(s.GalleryStatsRequest, "read", self._gallery_stats),
        }

    def call(
        self, name: str, protocol: str, token: str | None, payload: dict[str, Any]
    ) -> BaseModel:
        """Run operation ``name`` for the holder of ``token``; counted and timed per status."""
        start, code = time.perf_counter(), "OK"
        try:
            operation = self.operations[name]
            key = self.authenticate(token)
            request = self.parse(operation.request, payload)
            key.check(operation.role, operation.gallery(request))
            return operation.run(request)
        except Exception as exc:
            error = as_error(exc)
            code = error.grpc_code
            raise error from exc
        finally:
            REQUESTS.labels(name, protocol, code).inc()
            REQUEST_SECONDS.labels(name, code).observe(time.perf_counter() - start)

    def watch_job(
        self, protocol: str, token: str | None, payload: dict[str, Any]
    ) -> Iterator[s.JobView]:
        """The job each time its state changes, until it is finished (or the watch times out)."""
        first = self.call("get_job", protocol, token, payload)
        assert isinstance(first, s.GetJobResponse)
        job, deadline = first.job, time.monotonic() + self.settings.serving.watch_timeout_s
        yield job
        while not job.finished and time.monotonic() < deadline:
            time.sleep(self.settings.serving.watch_poll_s)
            try:
                latest = s.JobView.of(self.queue.get(job.job_id))
            except Exception as exc:
                raise as_error(exc) from exc
            if latest != job:
                job = latest
                yield job

    def authenticate(self, token: str | None) -> ApiKey:
        return ADMIN if self.keys is None else self.keys.authenticate(token)

    def parse(self, model: type[BaseModel], payload: dict[str, Any]) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise InvalidInput(f"invalid request: {problems}") from None

    def metrics(self) -> bytes:
        """The node's metrics, with the queue and gallery gauges read now."""
        try:
            depth = self.queue.depth()
            QUEUE_JOBS.labels("unfinished").set(depth.unfinished)
            QUEUE_JOBS.labels("pending").set(depth.pending)
            QUEUE_JOBS.labels("dead_letters").set(depth.dead_letters)
            for gallery in sorted(self.galleries_seen):
                stats = self.service.stats(gallery)
                GALLERY_SIZE.labels(gallery, "users").set(stats.users)
                GALLERY_SIZE.labels(gallery, "templates").set(stats.templates)
        except FaceGalleryError as exc:  # a scrape still answers with what it has
            log.warning("metrics: %s", exc.message)
        return exposition()

    # The operations. Each takes its validated request model.

    def _detect(self, r: s.DetectRequest) -> s.DetectResponse:
        return s.DetectResponse.of(self.service.detect(r.image.data), self.service.model_id)

    def _identify(self, r: s.IdentifyRequest) -> s.IdentifyResponse:
        batch = s.IdentifyBatchRequest(
            gallery=r.gallery,
            images=[r.image],
            top_k=r.top_k,
            threshold=r.threshold,
            target_fpir=r.target_fpir,
        )
        return self._identify_batch(batch).results[0]

    def _identify_batch(self, r: s.IdentifyBatchRequest) -> s.IdentifyBatchResponse:
        limit = self.settings.serving.max_images_per_request
        if len(r.images) > limit:
            raise InvalidInput(f"at most {limit} images per call, got {len(r.images)}")
        answers = self.service.identify_batch(
            r.gallery, [i.data for i in r.images], r.top_k or None, r.threshold, r.target_fpir
        )
        self.galleries_seen.add(r.gallery)
        point = s.OperatingPoint.of(answers.operating_point)
        return s.IdentifyBatchResponse(
            results=[
                s.IdentifyResponse(
                    faces=[s.IdentifiedFace.of(a) for a in faces],
                    threshold=point.threshold,
                    model_id=self.service.model_id,
                    operating_point=point,
                )
                for faces in answers.images
            ]
        )

    def _verify(self, r: s.VerifyRequest) -> s.VerifyResponse:
        return s.VerifyResponse.of(self.service.verify(r.gallery, r.user_id, r.image.data))

    def _enroll(self, r: s.EnrollRequest) -> s.EnrollResponse:
        images = [ImageInput(i.name or f"image-{n}", i.data) for n, i in enumerate(r.images)]
        job = self.queue.submit(
            r.gallery, r.user_id, images, r.idempotency_key or None, r.face_index
        )
        self.galleries_seen.add(r.gallery)
        return s.EnrollResponse(job=s.JobView.of(job))

    def _get_job(self, r: s.GetJobRequest) -> s.GetJobResponse:
        return s.GetJobResponse(job=s.JobView.of(self.queue.get(r.job_id)))

    def _list_users(self, r: s.ListUsersRequest) -> s.ListUsersResponse:
        size = r.page_size or 100
        users = self.service.users(r.gallery, r.page_token or None, size)
        return s.ListUsersResponse(
            user_ids=users, next_page_token=users[-1] if len(users) == size else ""
        )

    def _get_user(self, r: s.GetUserRequest) -> s.GetUserResponse:
        return s.GetUserResponse.of(self.service.get_user(r.gallery, r.user_id))

    def _delete_user(self, r: s.DeleteUserRequest) -> s.DeleteUserResponse:
        return s.DeleteUserResponse(
            deleted_templates=self.service.delete_user(r.gallery, r.user_id)
        )

    def _gallery_stats(self, r: s.GalleryStatsRequest) -> s.GalleryStatsResponse:
        stats = self.service.stats(r.gallery)
        self.galleries_seen.add(r.gallery)
        return s.GalleryStatsResponse(
            gallery=r.gallery, users=stats.users, templates=stats.templates
        )


def as_error(exc: BaseException) -> FaceGalleryError:
    """The caller's view of any failure: ours as they are, anything else as one line with a
    reference to the traceback in the log (never the traceback itself)."""
    if isinstance(exc, FaceGalleryError):
        return exc
    reference = uuid.uuid4().hex[:12]
    log.error("internal error %s", reference, exc_info=exc)
    return FaceGalleryError(f"internal error (reference {reference}); the service keeps running")
