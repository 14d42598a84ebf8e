"""The HTTP client (httpx): images go up as multipart files, answers come back as the API's
schema models, and error bodies become the `FaceGalleryError` they stand for. Every call has
a deadline (``timeout_s``), sent as ``x-request-timeout`` so the service drops the work once
nobody waits for it, and refusals with Retry-After are retried within it (`client.retry`)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from facegallery.client.images import ImageArg, named
from facegallery.client.retry import within_deadline
from facegallery.core.errors import DeadlineExceeded, FaceGalleryError, Unavailable, error_for
from facegallery.wire import schemas as s
from facegallery.wire.metadata import API_KEY_HEADER, RETRY_AFTER, TIMEOUT_HEADER

_M = TypeVar("_M", bound=BaseModel)


class HttpClient:
    def __init__(
        self, url: str, api_key: str | None = None, timeout_s: float = 60.0, attempts: int = 3
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
        self.timeout_s = timeout_s
        self.attempts = attempts

    def close(self) -> None:
        self.http.close()

    def detect(self, image: ImageArg) -> s.DetectResponse:
        return self._post("/v1/detect", s.DetectResponse, [("image", image)])

    def identify(
        self,
        gallery: str,
        image: ImageArg,
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyResponse:
        return self._post(
            f"/v1/galleries/{gallery}/identify",
            s.IdentifyResponse,
            [("image", image)],
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
        files = [("images", i) for i in images]
        return self._post(
            f"/v1/galleries/{gallery}/identify-batch",
            s.IdentifyBatchResponse,
            files,
            top_k=top_k,
            threshold=threshold,
            target_fpir=target_fpir,
        )

    def verify(
        self, gallery: str, user_id: str, image: ImageArg, threshold: float | None = None
    ) -> s.VerifyResponse:
        path = f"/v1/galleries/{gallery}/users/{user_id}/verify"
        return self._post(path, s.VerifyResponse, [("image", image)], threshold=threshold)

    def enroll(
        self,
        gallery: str,
        user_id: str,
        images: Sequence[ImageArg],
        idempotency_key: str = "",
        face_index: int | None = None,
    ) -> s.JobView:
        fields: dict[str, Any] = {"idempotency_key": idempotency_key}
        if face_index is not None:
            fields["face_index"] = face_index
        path = f"/v1/galleries/{gallery}/users/{user_id}/enroll"
        return self._post(path, s.EnrollResponse, [("images", i) for i in images], **fields).job

    def get_job(self, job_id: str) -> s.JobView:
        return self._get(f"/v1/jobs/{job_id}", s.GetJobResponse).job

    def watch_job(self, job_id: str) -> Iterator[s.JobView]:
        """The job each time it changes, until it is finished."""
        try:
            watch = self.http.stream("GET", f"/v1/jobs/{job_id}/watch")
        except httpx.TransportError as exc:
            raise Unavailable(f"{self.http.base_url} is not reachable: {exc}") from exc
        with watch as answer:
            if answer.status_code != 200:
                answer.read()
                raise _error(answer)
            for line in answer.iter_lines():
                body = json.loads(line)
                if "error" in body:
                    raise error_for(**_fields(body["error"]))
                yield s.WatchJobResponse.model_validate(body).job

    def wait_job(self, job_id: str) -> s.JobView:
        """The job once finished."""
        return deque(self.watch_job(job_id), maxlen=1)[0]

    def list_users(
        self, gallery: str, page_token: str = "", page_size: int = 0
    ) -> s.ListUsersResponse:
        params = {"page_token": page_token, "page_size": page_size}
        return self._get(f"/v1/galleries/{gallery}/users", s.ListUsersResponse, params)

    def get_user(self, gallery: str, user_id: str) -> s.GetUserResponse:
        return self._get(f"/v1/galleries/{gallery}/users/{user_id}", s.GetUserResponse)

    def delete_user(self, gallery: str, user_id: str) -> int:
        path = f"/v1/galleries/{gallery}/users/{user_id}"
        return self._call("DELETE", path, s.DeleteUserResponse).deleted_templates

    def gallery_stats(self, gallery: str) -> s.GalleryStatsResponse:
        return self._get(f"/v1/galleries/{gallery}/stats", s.GalleryStatsResponse)

    def _post(
        self, path: str, model: type[_M], files: list[tuple[str, ImageArg]], **fields: Any
    ) -> _M:
        upload = [(field, named(image, i)) for i, (field, image) in enumerate(files)]
        data = {k: str(v) for k, v in fields.items() if v is not None}
        return self._call("POST", path, model, files=upload, data=data)

    def _get(self, path: str, model: type[_M], params: dict[str, Any] | None = None) -> _M:
        return self._call("GET", path, model, params=params)

    def _call(self, method: str, path: str, model: type[_M], **request: Any) -> _M:
        """One call within the deadline: each attempt says how much of it is left."""

        def attempt(remaining_s: float) -> _M:
            headers = {TIMEOUT_HEADER: f"{max(remaining_s, 0.001):.3f}"}
            try:
                answer = self.http.request(
                    method, path, headers=headers, timeout=remaining_s, **request
                )
            except httpx.TimeoutException as exc:
                raise DeadlineExceeded(f"no answer within the call's deadline ({exc})") from exc
            except httpx.TransportError as exc:
                raise Unavailable(f"{self.http.base_url} is not reachable: {exc}") from exc
            if answer.status_code >= 400:
                raise _error(answer)
            return model.model_validate(answer.json())

        return within_deadline(attempt, self.timeout_s, self.attempts)


def _error(answer: httpx.Response) -> FaceGalleryError:
    retry = answer.headers.get(RETRY_AFTER)
    try:
        fields = _fields(answer.json()["error"])
    except (ValueError, KeyError, TypeError):  # not our body (e.g. a proxy's)
        fields = {"code": "", "message": answer.text.strip() or answer.reason_phrase}
        fields["reason"] = {429: "overloaded", 503: "unavailable"}.get(answer.status_code)
    return error_for(**fields, retry_after_s=int(retry) if retry else None)


def _fields(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error["code"], "message": error["message"], "reason": error["reason"]}
