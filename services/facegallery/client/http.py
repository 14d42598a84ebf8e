"""The HTTP client (httpx): images go up as multipart files, answers come back as the API's
schema models, and error bodies become the `FaceGalleryError` they stand for."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from facegallery.client.images import ImageArg, named
from facegallery.core.errors import FaceGalleryError, Unavailable, error_for
from facegallery.wire import schemas as s

_M = TypeVar("_M", bound=BaseModel)


class HttpClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        headers = {"x-api-key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=timeout_s)

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
        with self._call(lambda: self.http.stream("GET", f"/v1/jobs/{job_id}/watch")) as answer:
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
        answer = self._call(lambda: self.http.delete(path))
        return _parse(answer, s.DeleteUserResponse).deleted_templates

    def gallery_stats(self, gallery: str) -> s.GalleryStatsResponse:
        return self._get(f"/v1/galleries/{gallery}/stats", s.GalleryStatsResponse)

    def _post(
        self, path: str, model: type[_M], files: list[tuple[str, ImageArg]], **fields: Any
    ) -> _M:
        upload = [(field, named(image, i)) for i, (field, image) in enumerate(files)]
        data = {k: str(v) for k, v in fields.items() if v is not None}
        answer = self._call(lambda: self.http.post(path, files=upload, data=data))
        return _parse(answer, model)

    def _get(self, path: str, model: type[_M], params: dict[str, Any] | None = None) -> _M:
        return _parse(self._call(lambda: self.http.get(path, params=params)), model)

    def _call(self, send: Any) -> Any:
        try:
            return send()
        except httpx.TransportError as exc:
            raise Unavailable(f"{self.http.base_url} is not reachable: {exc}") from exc


def _parse(answer: httpx.Response, model: type[_M]) -> _M:
    if answer.status_code >= 400:
        raise _error(answer)
    return model.model_validate(answer.json())


def _error(answer: httpx.Response) -> FaceGalleryError:
    retry = answer.headers.get("retry-after")
    try:
        fields = _fields(answer.json()["error"])
    except (ValueError, KeyError, TypeError):  # not our body (e.g. a proxy's)
        fields = {"code": "", "message": answer.text.strip() or answer.reason_phrase}
        fields["reason"] = {429: "overloaded", 503: "unavailable"}.get(answer.status_code)
    return error_for(**fields, retry_after_s=int(retry) if retry else None)


def _fields(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error["code"], "message": error["message"], "reason": error["reason"]}
