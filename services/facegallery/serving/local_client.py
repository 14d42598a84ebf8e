"""`LocalClient`: the `FaceGalleryClient` protocol in process, over the same servicer the
served API runs (`Api`: the same validation, the same answers, the same errors), on a gallery
of the settings (the embedded Milvus Lite file by default) and no server at all. Enrollment
jobs run in the call (``jobs.inline``) and are kept beside the gallery."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel

from facegallery.client.images import ImageArg, named
from facegallery.core.config import Settings
from facegallery.jobs.inline import InlineJobs
from facegallery.service.face_service import FaceService
from facegallery.serving.api import Api
from facegallery.serving.keys import ADMIN
from facegallery.wire import schemas as s

_M = TypeVar("_M", bound=BaseModel)


class LocalClient:
    """Every operation of `HttpClient` / `GrpcClient`, answered in this process."""

    def __init__(self, settings: Settings) -> None:
        self.service = FaceService.from_settings(settings)
        jobs = InlineJobs(
            settings.gallery.inline_jobs_file, settings.queue, settings.decode, self.service.enroll
        )
        self.api = Api(self.service, jobs, None, settings)

    def close(self) -> None:
        """Nothing to let go of: the gallery's connection ends with the process."""

    def detect(self, image: ImageArg) -> s.DetectResponse:
        return self._call("detect", s.DetectResponse, image=_image(image))

    def identify(
        self,
        gallery: str,
        image: ImageArg,
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyResponse:
        return self._call(
            "identify",
            s.IdentifyResponse,
            gallery=gallery,
            image=_image(image),
            top_k=top_k,
            threshold=threshold,
            target_fpir=target_fpir,
        )

    def identify_batch(
        self,
        gallery: str,
        images: Sequence[ImageArg],
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyBatchResponse:
        return self._call(
            "identify_batch",
            s.IdentifyBatchResponse,
            gallery=gallery,
            images=[_image(im, i) for i, im in enumerate(images)],
            top_k=top_k,
            threshold=threshold,
            target_fpir=target_fpir,
        )

    def verify(
        self, gallery: str, user_id: str, image: ImageArg, threshold: float | None = None
    ) -> s.VerifyResponse:
        return self._call(
            "verify",
            s.VerifyResponse,
            gallery=gallery,
            user_id=user_id,
            image=_image(image),
            threshold=threshold,
        )

    def enroll(
        self,
        gallery: str,
        user_id: str,
        images: Sequence[ImageArg],
        idempotency_key: str = "",
        face_index: int | None = None,
    ) -> s.JobView:
        return self._call(
            "enroll",
            s.EnrollResponse,
            gallery=gallery,
            user_id=user_id,
            images=[_image(im, i) for i, im in enumerate(images)],
            idempotency_key=idempotency_key,
            face_index=face_index,
        ).job

    def get_job(self, job_id: str) -> s.JobView:
        return self._call("get_job", s.GetJobResponse, job_id=job_id).job

    def watch_job(self, job_id: str) -> Iterator[s.JobView]:
        """The servicer's own watch, driven on a private event loop."""
        loop = asyncio.new_event_loop()
        updates = self.api.watch_job(None, job_id)
        try:
            while True:
                try:
                    yield loop.run_until_complete(anext(updates))
                except StopAsyncIteration:
                    return
        finally:
            loop.run_until_complete(updates.aclose())
            loop.close()

    def wait_job(self, job_id: str) -> s.JobView:
        return deque(self.watch_job(job_id), maxlen=1)[0]

    def list_users(
        self, gallery: str, page_token: str = "", page_size: int = 0
    ) -> s.ListUsersResponse:
        return self._call(
            "list_users",
            s.ListUsersResponse,
            gallery=gallery,
            page_token=page_token,
            page_size=page_size,
        )

    def get_user(self, gallery: str, user_id: str) -> s.GetUserResponse:
        return self._call("get_user", s.GetUserResponse, gallery=gallery, user_id=user_id)

    def delete_user(self, gallery: str, user_id: str) -> int:
        answer = self._call("delete_user", s.DeleteUserResponse, gallery=gallery, user_id=user_id)
        return answer.deleted_templates

    def gallery_stats(self, gallery: str) -> s.GalleryStatsResponse:
        return self._call("gallery_stats", s.GalleryStatsResponse, gallery=gallery)

    def _call(self, name: str, model: type[_M], **payload: Any) -> _M:
        with self.api.counted(name, "local"):
            answer = self.api.call(name, ADMIN, payload)
        assert isinstance(answer, model)
        return answer


def _image(image: ImageArg, index: int = 0) -> dict[str, Any]:
    name, data = named(image, index)
    return {"data": data, "name": name}
