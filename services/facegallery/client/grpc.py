"""The gRPC client: the same methods and results as `HttpClient`, over
``facegallery.v1.FaceGalleryService``; a status becomes the `FaceGalleryError` it stands for
(reason and Retry-After from the trailing metadata). Every call has gRPC's own deadline
(``timeout_s``), which the service honours at every stage, and refusals with Retry-After are
retried within it (`client.retry`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from pydantic import BaseModel

from facegallery.client.images import ImageArg, named
from facegallery.client.retry import within_deadline
from facegallery.core.errors import FaceGalleryError, error_for
from facegallery.v1 import facegallery_pb2 as pb
from facegallery.v1 import facegallery_pb2_grpc as pb_grpc
from facegallery.wire import schemas as s
from facegallery.wire.metadata import API_KEY_HEADER, REASON_METADATA, RETRY_AFTER

_M = TypeVar("_M", bound=BaseModel)


class GrpcClient:
    def __init__(
        self, target: str, api_key: str | None = None, timeout_s: float = 60.0, attempts: int = 3
    ) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.FaceGalleryServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.metadata = [(API_KEY_HEADER, api_key)] if api_key else []
        self.timeout_s = timeout_s
        self.attempts = attempts

    def close(self) -> None:
        self.channel.close()

    def detect(self, image: ImageArg) -> s.DetectResponse:
        request = pb.DetectRequest(image=_image(image))
        return self._unary(self.stub.Detect, request, s.DetectResponse)

    def identify(
        self,
        gallery: str,
        image: ImageArg,
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyResponse:
        request = pb.IdentifyRequest(
            gallery=gallery,
            image=_image(image),
            top_k=top_k,
            threshold=threshold,
            target_fpir=target_fpir,
        )
        return self._unary(self.stub.Identify, request, s.IdentifyResponse)

    def identify_batch(
        self,
        gallery: str,
        images: Sequence[ImageArg],
        top_k: int = 0,
        threshold: float | None = None,
        target_fpir: float | None = None,
    ) -> s.IdentifyBatchResponse:
        request = pb.IdentifyBatchRequest(
            gallery=gallery,
            images=[_image(im, i) for i, im in enumerate(images)],
            top_k=top_k,
            threshold=threshold,
            target_fpir=target_fpir,
        )
        return self._unary(self.stub.IdentifyBatch, request, s.IdentifyBatchResponse)

    def verify(
        self, gallery: str, user_id: str, image: ImageArg, threshold: float | None = None
    ) -> s.VerifyResponse:
        request = pb.VerifyRequest(
            gallery=gallery, user_id=user_id, image=_image(image), threshold=threshold
        )
        return self._unary(self.stub.Verify, request, s.VerifyResponse)

    def enroll(
        self,
        gallery: str,
        user_id: str,
        images: Sequence[ImageArg],
        idempotency_key: str = "",
        face_index: int | None = None,
    ) -> s.JobView:
        request = pb.EnrollRequest(
            gallery=gallery,
            user_id=user_id,
            images=[_image(im, i) for i, im in enumerate(images)],
            idempotency_key=idempotency_key,
            face_index=face_index,
        )
        return self._unary(self.stub.Enroll, request, s.EnrollResponse).job

    def get_job(self, job_id: str) -> s.JobView:
        request = pb.GetJobRequest(job_id=job_id)
        return self._unary(self.stub.GetJob, request, s.GetJobResponse).job

    def watch_job(self, job_id: str) -> Iterator[s.JobView]:
        stream = self.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=self.timeout_s
        )
        try:
            for answer in stream:
                yield _model(answer, s.WatchJobResponse).job
        except grpc.RpcError as exc:
            raise _error(exc) from None

    def wait_job(self, job_id: str) -> s.JobView:
        return deque(self.watch_job(job_id), maxlen=1)[0]

    def list_users(
        self, gallery: str, page_token: str = "", page_size: int = 0
    ) -> s.ListUsersResponse:
        request = pb.ListUsersRequest(gallery=gallery, page_token=page_token, page_size=page_size)
        return self._unary(self.stub.ListUsers, request, s.ListUsersResponse)

    def get_user(self, gallery: str, user_id: str) -> s.GetUserResponse:
        request = pb.GetUserRequest(gallery=gallery, user_id=user_id)
        return self._unary(self.stub.GetUser, request, s.GetUserResponse)

    def delete_user(self, gallery: str, user_id: str) -> int:
        request = pb.DeleteUserRequest(gallery=gallery, user_id=user_id)
        return self._unary(self.stub.DeleteUser, request, s.DeleteUserResponse).deleted_templates

    def gallery_stats(self, gallery: str) -> s.GalleryStatsResponse:
        request = pb.GalleryStatsRequest(gallery=gallery)
        return self._unary(self.stub.GalleryStats, request, s.GalleryStatsResponse)

    def _unary(self, method: Callable[..., Any], request: Any, model: type[_M]) -> _M:
        """One call within the deadline: each attempt's gRPC deadline is what is left."""

        def attempt(remaining_s: float) -> _M:
            try:
                answer = method(request, metadata=self.metadata, timeout=remaining_s)
            except grpc.RpcError as exc:
                raise _error(exc) from None
            return _model(answer, model)

        return within_deadline(attempt, self.timeout_s, self.attempts)


def _image(image: ImageArg, index: int = 0) -> Any:
    name, data = named(image, index)
    return pb.Image(data=data, name=name)


def _model(message: Any, model: type[_M]) -> _M:
    fields = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return model.model_validate(fields)


def _error(exc: grpc.RpcError) -> FaceGalleryError:
    trailing = dict(exc.trailing_metadata() or ())
    retry = trailing.get(RETRY_AFTER)
    return error_for(
        exc.code().name,
        exc.details() or "",
        trailing.get(REASON_METADATA),
        int(retry) if retry else None,
    )
