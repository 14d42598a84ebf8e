"""The servicer layer: every API operation, once. The HTTP routes and the gRPC methods of the
gateway authenticate the caller's key from the headers (`Api.authenticate`), read the body
within its bound, and hand the request (as a dict of the schema's fields) and the key to
`Api.call`, which counts the images, validates, authorizes, runs the operation on
`FaceService` / the enrollment queue, and answers with a schema model or raises a
`FaceGalleryError`; `Api.counted` counts and times the whole call, refusals included.
Whatever else goes wrong is logged here with its traceback and reaches the caller as one
line."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from facegallery.core.config import Settings
from facegallery.core.errors import InvalidInput, Overloaded, as_error
from facegallery.core.telemetry import REQUEST_SECONDS, REQUESTS
from facegallery.jobs.inline import InlineJobs
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.serving import convert
from facegallery.serving.keys import ADMIN, ApiKey, KeyStore, Role
from facegallery.wire import schemas as s


def _named_gallery(request: Any) -> str | None:
    return str(request.gallery)


def _keyless(run: Callable[[Any], BaseModel]) -> Callable[[Any, ApiKey], BaseModel]:
    """An operation whose answer does not depend on who asks (all but enroll)."""
    return lambda request, _key: run(request)


@dataclass(frozen=True)
class Operation:
    """One API operation: its request model, the role it needs, the gallery it touches (the
    key must be valid for it; None: no gallery), and what it does (for whom)."""

    request: type[BaseModel]
    role: Role
    run: Callable[[Any, ApiKey], BaseModel]
    gallery: Callable[[Any], str | None] = _named_gallery


class Api:
    """Every operation of the API over one `FaceService` and one enrollment queue (or, in
    the local client, the inline jobs)."""

    def __init__(
        self,
        service: FaceService,
        queue: EnrollmentQueue | InlineJobs,
        keys: KeyStore | None,
        settings: Settings,
    ) -> None:
        self.service = service
        self.queue = queue
        self.keys = keys  # None: authentication switched off (local demo)
        self.settings = settings
        self.watches: Counter[str] = Counter()  # open watches per key id
        self.image_limits = {
            "identify_batch": settings.serving.max_images_per_request,
            "enroll": settings.queue.max_images_per_job,
        }
        self.operations: dict[str, Operation] = {
            "detect": Operation(s.DetectRequest, "read", _keyless(self._detect), lambda r: None),
            "identify": Operation(s.IdentifyRequest, "read", _keyless(self._identify)),
            "identify_batch": Operation(
                s.IdentifyBatchRequest, "read", _keyless(self._identify_batch)
            ),
            "verify": Operation(s.VerifyRequest, "read", _keyless(self._verify)),
            "enroll": Operation(s.EnrollRequest, "write", self._enroll),
            "get_job": Operation(
                s.GetJobRequest,
                "read",
                _keyless(self._get_job),
                lambda r: self.queue.get(r.job_id).gallery,
            ),
            "list_users": Operation(s.ListUsersRequest, "read", _keyless(self._list_users)),
            "get_user": Operation(s.GetUserRequest, "read", _keyless(self._get_user)),
            "delete_user": Operation(s.DeleteUserRequest, "write", _keyless(self._delete_user)),
            "gallery_stats": Operation(
                s.GalleryStatsRequest, "read", _keyless(self._gallery_stats)
            ),
        }

    @contextmanager
    def counted(self, name: str, protocol: str) -> Iterator[None]:
        """Count and time one call of ``name``, whatever stops it: a refused key, a body
        over its bound, bad input, or the operation's own answer. Errors leave as
        `FaceGalleryError` (anything else as one line, see `as_error`)."""
        start, code = time.perf_counter(), "OK"
        try:
            yield
        except asyncio.CancelledError:  # the caller left
            code = "CANCELLED"
            raise
        except Exception as exc:
            error = as_error(exc)
            code = error.grpc_code
            raise error from exc
        finally:
            REQUESTS.labels(name, protocol, code).inc()
            REQUEST_SECONDS.labels(name, code).observe(time.perf_counter() - start)

    def call(self, name: str, key: ApiKey, payload: dict[str, Any]) -> BaseModel:
        """Run operation ``name`` for ``key`` (already authenticated from the headers)."""
        operation = self.operations[name]
        self.check_counts(name, payload)
        request = self.parse(operation.request, payload)
        key.check(operation.role, operation.gallery(request))
        return operation.run(request, key)

    def check_counts(self, name: str, payload: dict[str, Any]) -> None:
        """Refuse too many images before any of them is decoded (base64 or pixels)."""
        limit = self.image_limits.get(name)
        images = payload.get("images")
        if limit is not None and isinstance(images, list) and len(images) > limit:
            raise InvalidInput(f"at most {limit} images per call, got {len(images)}")

    async def watch_job(self, token: str | None, job_id: str) -> AsyncGenerator[s.JobView]:
        """The job each time its state changes, until it is finished or the watch times out.
        Nothing is held while it waits (an await, not a thread); the key is checked again
        before every poll (a revoked key ends the watch), and each key may hold at most
        ``serving.max_watches_per_key`` watches on this replica. A caller who leaves
        cancels the generator, which frees its place."""
        key = await asyncio.to_thread(self.authenticate, token)
        first = await asyncio.to_thread(self.call, "get_job", key, {"job_id": job_id})
        assert isinstance(first, s.GetJobResponse)
        limit = self.settings.serving.max_watches_per_key
        if self.watches[key.key_id] >= limit:
            raise Overloaded(
                f"this API key already watches {limit} jobs on this replica; close one, or "
                "poll GetJob instead",
                retry_after_s=self.settings.serving.retry_after_s,
            )
        self.watches[key.key_id] += 1
        try:
            job = first.job
            deadline = time.monotonic() + self.settings.serving.watch_timeout_s
            yield job
            while not job.finished and time.monotonic() < deadline:
                await asyncio.sleep(self.settings.serving.watch_poll_s)
                latest = await asyncio.to_thread(self._watched, token, job.job_id)
                if latest != job:
                    job = latest
                    yield job
        finally:
            self.watches[key.key_id] -= 1
            if not self.watches[key.key_id]:
                del self.watches[key.key_id]

    def _watched(self, token: str | None, job_id: str) -> s.JobView:
        self.authenticate(token)  # revoked meanwhile: Unauthenticated ends the watch
        try:
            return convert.job_view(self.queue.get(job_id))
        except Exception as exc:
            raise as_error(exc) from exc

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

    # The operations. Each takes its validated request model.

    def _detect(self, r: s.DetectRequest) -> s.DetectResponse:
        return convert.detect_response(self.service.detect(r.image.data), self.service.model_id)

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
        answers = self.service.identify_batch(
            r.gallery, [i.data for i in r.images], r.top_k or None, r.threshold, r.target_fpir
        )
        point = convert.operating_point(answers.operating_point)
        return s.IdentifyBatchResponse(
            results=[
                s.IdentifyResponse(
                    faces=[convert.identified_face(a) for a in faces],
                    threshold=point.threshold,
                    model_id=self.service.model_id,
                    operating_point=point,
                )
                for faces in answers.images
            ]
        )

    def _verify(self, r: s.VerifyRequest) -> s.VerifyResponse:
        return convert.verify_response(
            self.service.verify(r.gallery, r.user_id, r.image.data, r.threshold)
        )

    def _enroll(self, r: s.EnrollRequest, key: ApiKey) -> s.EnrollResponse:
        """Queued under the key's share of the queue (`EnrollmentQueue.submit`'s owner)."""
        images = [ImageInput(i.name or f"image-{n}", i.data) for n, i in enumerate(r.images)]
        job = self.queue.submit(
            r.gallery, r.user_id, images, r.idempotency_key or None, r.face_index, key.key_id
        )
        return s.EnrollResponse(job=convert.job_view(job))

    def _get_job(self, r: s.GetJobRequest) -> s.GetJobResponse:
        return s.GetJobResponse(job=convert.job_view(self.queue.get(r.job_id)))

    def _list_users(self, r: s.ListUsersRequest) -> s.ListUsersResponse:
        size = r.page_size or 100
        users = self.service.users(r.gallery, r.page_token or None, size)
        return s.ListUsersResponse(
            user_ids=users, next_page_token=users[-1] if len(users) == size else ""
        )

    def _get_user(self, r: s.GetUserRequest) -> s.GetUserResponse:
        return convert.user(self.service.get_user(r.gallery, r.user_id))

    def _delete_user(self, r: s.DeleteUserRequest) -> s.DeleteUserResponse:
        return s.DeleteUserResponse(
            deleted_templates=self.service.delete_user(r.gallery, r.user_id)
        )

    def _gallery_stats(self, r: s.GalleryStatsRequest) -> s.GalleryStatsResponse:
        stats = self.service.stats(r.gallery)
        return s.GalleryStatsResponse(
            gallery=r.gallery, users=stats.users, templates=stats.templates
        )
