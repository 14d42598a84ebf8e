"""`FaceGalleryClient`: the twelve operations every way of calling facegallery offers, with
the same arguments, the same typed results (``wire.schemas``) and the same exceptions
(``core.errors``). `HttpClient` and `GrpcClient` call a running service; `LocalClient`
(``serving.local_client``, it needs the server install) runs the same servicer in process.
Code written against this protocol runs on any of the three."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from facegallery.client.images import ImageArg
from facegallery.wire import schemas as s


class FaceGalleryClient(Protocol):
    def close(self) -> None: ...

    def detect(self, image: ImageArg) -> s.DetectResponse:
        """Every face in the image: box, landmarks, quality."""
        ...

    def identify(
        self,
        gallery: str,
        image: ImageArg,
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyResponse:
        """Who is each face (1:N), decided at the gallery's operating point."""
        ...

    def identify_batch(
        self,
        gallery: str,
        images: Sequence[ImageArg],
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyBatchResponse:
        """`identify` for several frames in one call."""
        ...

    def verify(
        self, gallery: str, user_id: str, image: ImageArg, threshold: float | None = None
    ) -> s.VerifyResponse:
        """Is the image's largest face this user (1:1)?"""
        ...

    def enroll(
        self,
        gallery: str,
        user_id: str,
        images: Sequence[ImageArg],
        idempotency_key: str = "",
        face_index: int | None = None,
    ) -> s.JobView:
        """Submit an enrollment job; the same idempotency key returns the same job."""
        ...

    def get_job(self, job_id: str) -> s.JobView:
        """A job's state and, once finished, its per-image outcomes."""
        ...

    def watch_job(self, job_id: str) -> Iterator[s.JobView]:
        """The job each time it changes, until it is finished."""
        ...

    def wait_job(self, job_id: str) -> s.JobView:
        """The job once finished."""
        ...

    def list_users(
        self, gallery: str, page_token: str = "", page_size: int = 0
    ) -> s.ListUsersResponse:
        """User ids in order, a page at a time."""
        ...

    def get_user(self, gallery: str, user_id: str) -> s.GetUserResponse:
        """One user and their templates."""
        ...

    def delete_user(self, gallery: str, user_id: str) -> int:
        """Remove a user; the number of templates deleted."""
        ...

    def gallery_stats(self, gallery: str) -> s.GalleryStatsResponse:
        """Users and templates in the gallery."""
        ...
