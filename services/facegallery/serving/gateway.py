"""The Gateway deployment: the ingress for HTTP (FastAPI, /v1/...) and gRPC
(``facegallery.v1.FaceGalleryService`` and the standard health service). Both transports only
translate: the request becomes the schema's dict, `Api.call` does the work, the answer (or the
error, through `errors.py`'s one mapping) goes back in the transport's terms."""

import json
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from grpc_health.v1 import health_pb2
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from facegallery.auth import KeyStore
from facegallery.config import Settings
from facegallery.errors import FaceGalleryError, InvalidInput
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.metrics import REQUESTS
from facegallery.serving import schemas as s
from facegallery.serving.api import Api, as_error
from facegallery.serving.service import served_service
from facegallery.v1 import facegallery_pb2 as pb

GRPC_SERVICERS = [
    "facegallery.v1.facegallery_pb2_grpc.add_FaceGalleryServiceServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
API_KEY_HEADER = "x-api-key"
REASON_METADATA = "facegallery-reason"

http = FastAPI(
    title="facegallery",
    version="1",
    description="Face detection, 1:N identification, 1:1 verification and asynchronous "
    "enrollment. Send the API key as the x-api-key header. Images: multipart uploads "
    "(fields image / images) or base64 in JSON. Errors: "
    '{"error": {"code", "reason", "message"}}; 429 and 503 carry Retry-After.',
)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": s.ErrorResponse, "description": why}
    for status, why in [
        (400, "invalid request or image"),
        (401, "no or unknown API key"),
        (403, "the key's role or galleries do not allow this"),
        (404, "no such user or job"),
        (429, "at capacity: retry after Retry-After seconds"),
        (503, "a dependency is unavailable: retry after Retry-After seconds"),
    ]
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body: the model as JSON, or its fields as a multipart form."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": {"type": "object"}},
            },
        }
    }


def error_response(error: FaceGalleryError) -> JSONResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    body = s.ErrorResponse(
        error=s.ErrorDetail(code=error.grpc_code, reason=error.reason, message=error.message)
    )
    return JSONResponse(body.model_dump(), status_code=error.http_status, headers=headers)


async def read_payload(request: Request, **path: str) -> dict[str, Any]:
    """The request's fields: a JSON object, or a form (files ``image`` / ``images``; other
    fields as values), with the path's ids on top."""
    if request.method in ("GET", "DELETE"):
        return {**request.query_params, **path}
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        payload: dict[str, Any] = {}
        async with request.form() as form:
            for field, value in form.multi_items():
                if isinstance(value, UploadFile):
                    image = {"data": await value.read(), "name": value.filename or ""}
                    if field == "images":
                        payload.setdefault("images", []).append(image)
                    else:
                        payload[field] = image
                else:
                    payload[field] = value
    else:
        try:
            payload = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise InvalidInput("the request body must be a JSON object")
    for name, value in path.items():
        if payload.setdefault(name, value) != value:
            raise InvalidInput(f"{name} in the body ({payload[name]!r}) differs from the path")
    return payload


# The helpers the Gateway's methods call are defined above the class on purpose: Serve takes
# the ingress class when it is decorated, and names defined after it were missing in the
# replicas (NameError at request time).


def _token(headers: Mapping[str, str]) -> str | None:
    """The API key from HTTP headers or gRPC metadata: ``x-api-key``, else a bearer token."""
    bearer = str(headers.get("authorization", ""))
    return headers.get(API_KEY_HEADER) or bearer.removeprefix("Bearer ").strip() or None


def _grpc_token(context: Any) -> str | None:
    return _token(dict(context.invocation_metadata()))


def _proto(answer: BaseModel, reply: type[ProtoMessage]) -> ProtoMessage:
    return json_format.ParseDict(answer.model_dump(mode="json", exclude_none=True), reply())


def _as_dict(request: ProtoMessage) -> dict[str, Any]:
    return dict(json_format.MessageToDict(request, preserving_proto_field_name=True))


def _set_error(context: Any, error: FaceGalleryError) -> None:
    context.set_code(grpc.StatusCode[error.grpc_code])
    context.set_details(error.message)
    trailing = [(REASON_METADATA, error.reason)]
    if error.retry_after_s is not None:
        trailing.append(("retry-after", str(error.retry_after_s)))
    context.set_trailing_metadata(trailing)


def _ndjson(job: s.JobView) -> bytes:
    return s.WatchJobResponse(job=job).model_dump_json().encode() + b"\n"


@serve.ingress(http)
class Gateway:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        settings: dict[str, object],
        detector: DeploymentHandle[Any],
        embedder: DeploymentHandle[Any],
        workers: DeploymentHandle[Any],
    ) -> None:
        config = Settings(**settings)  # type: ignore[arg-type]
        keys = KeyStore(config.queue.url, config.queue.prefix) if config.auth.required else None
        queue = EnrollmentQueue(config.queue, config.decode)
        self.api = Api(await served_service(config, detector, embedder), queue, keys, config)
        self.workers = workers  # bound so that the app deploys them

    # HTTP -----------------------------------------------------------------------------------

    async def _http(
        self, operation: str, request: Request, status: int = 200, **path: str
    ) -> Response:
        try:
            payload = await read_payload(request, **path)
        except Exception as exc:  # refused before Api.call, which counts everything after
            error = as_error(exc)
            REQUESTS.labels(operation, "http", error.grpc_code).inc()
            return error_response(error)
        try:
            token = _token(request.headers)
            answer = await run_in_threadpool(self.api.call, operation, "http", token, payload)
        except Exception as exc:
            return error_response(as_error(exc))
        return JSONResponse(answer.model_dump(mode="json"), status_code=status)

    @http.post(
        "/v1/detect",
        response_model=s.DetectResponse,
        responses=_ERRORS,
        openapi_extra=_body(s.DetectRequest),
    )
    async def detect(self, request: Request) -> Response:
        return await self._http("detect", request)

    @http.post(
        "/v1/galleries/{gallery}/identify",
        response_model=s.IdentifyResponse,
        responses=_ERRORS,
        openapi_extra=_body(s.IdentifyRequest),
    )
    async def identify(self, gallery: str, request: Request) -> Response:
        return await self._http("identify", request, gallery=gallery)

    @http.post(
        "/v1/galleries/{gallery}/identify-batch",
        response_model=s.IdentifyBatchResponse,
        responses=_ERRORS,
        openapi_extra=_body(s.IdentifyBatchRequest),
    )
    async def identify_batch(self, gallery: str, request: Request) -> Response:
        return await self._http("identify_batch", request, gallery=gallery)

    @http.post(
        "/v1/galleries/{gallery}/users/{user_id}/verify",
        response_model=s.VerifyResponse,
        responses=_ERRORS,
        openapi_extra=_body(s.VerifyRequest),
    )
    async def verify(self, gallery: str, user_id: str, request: Request) -> Response:
        return await self._http("verify", request, gallery=gallery, user_id=user_id)

    @http.post(
        "/v1/galleries/{gallery}/users/{user_id}/enroll",
        status_code=202,
        response_model=s.EnrollResponse,
        responses=_ERRORS,
        openapi_extra=_body(s.EnrollRequest),
    )
    async def enroll(self, gallery: str, user_id: str, request: Request) -> Response:
        return await self._http("enroll", request, 202, gallery=gallery, user_id=user_id)

    @http.get("/v1/jobs/{job_id}", response_model=s.GetJobResponse, responses=_ERRORS)
    async def get_job(self, job_id: str, request: Request) -> Response:
        return await self._http("get_job", request, job_id=job_id)

    @http.get("/v1/jobs/{job_id}/watch", responses=_ERRORS)
    async def watch_job(self, job_id: str, request: Request) -> Response:
        """The job as newline-delimited JSON (one WatchJobResponse per change) until it ends."""
        token, payload = _token(request.headers), {"job_id": job_id}
        stream = self.api.watch_job("http", token, payload)
        try:
            first = await run_in_threadpool(next, stream)
        except Exception as exc:
            return error_response(as_error(exc))

        def lines() -> Iterator[bytes]:
            yield _ndjson(first)
            try:
                for job in stream:
                    yield _ndjson(job)
            except FaceGalleryError as exc:
                yield bytes(error_response(exc).body) + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @http.get(
        "/v1/galleries/{gallery}/users", response_model=s.ListUsersResponse, responses=_ERRORS
    )
    async def list_users(self, gallery: str, request: Request) -> Response:
        return await self._http("list_users", request, gallery=gallery)

    @http.get(
        "/v1/galleries/{gallery}/users/{user_id}",
        response_model=s.GetUserResponse,
        responses=_ERRORS,
    )
    async def get_user(self, gallery: str, user_id: str, request: Request) -> Response:
        return await self._http("get_user", request, gallery=gallery, user_id=user_id)

    @http.delete(
        "/v1/galleries/{gallery}/users/{user_id}",
        response_model=s.DeleteUserResponse,
        responses=_ERRORS,
    )
    async def delete_user(self, gallery: str, user_id: str, request: Request) -> Response:
        return await self._http("delete_user", request, gallery=gallery, user_id=user_id)

    @http.get(
        "/v1/galleries/{gallery}/stats", response_model=s.GalleryStatsResponse, responses=_ERRORS
    )
    async def gallery_stats(self, gallery: str, request: Request) -> Response:
        return await self._http("gallery_stats", request, gallery=gallery)

    @http.get("/v1/health")
    async def health(self) -> dict[str, str]:
        """Liveness without a key (the proxy's own /-/healthz says the same of Serve)."""
        return {"status": "SERVING", "model_id": self.api.service.model_id}

    @http.get("/metrics")
    async def metrics(self) -> Response:
        """Prometheus exposition for this node (no key)."""
        body = await run_in_threadpool(self.api.metrics)
        return Response(body, media_type="text/plain; version=0.0.4")

    # gRPC -----------------------------------------------------------------------------------

    def _grpc(
        self, operation: str, request: ProtoMessage, context: Any, reply: type[ProtoMessage]
    ) -> ProtoMessage:
        try:
            answer = self.api.call(operation, "grpc", _grpc_token(context), _as_dict(request))
        except Exception as exc:
            _set_error(context, as_error(exc))
            return reply()
        return _proto(answer, reply)

    def Detect(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("detect", request, grpc_context, pb.DetectResponse)

    def Identify(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("identify", request, grpc_context, pb.IdentifyResponse)

    def IdentifyBatch(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("identify_batch", request, grpc_context, pb.IdentifyBatchResponse)

    def Verify(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("verify", request, grpc_context, pb.VerifyResponse)

    def Enroll(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("enroll", request, grpc_context, pb.EnrollResponse)

    def GetJob(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("get_job", request, grpc_context, pb.GetJobResponse)

    def WatchJob(self, request: Any, grpc_context: Any) -> Iterator[ProtoMessage]:
        try:
            for job in self.api.watch_job("grpc", _grpc_token(grpc_context), _as_dict(request)):
                yield _proto(s.WatchJobResponse(job=job), pb.WatchJobResponse)
        except Exception as exc:
            _set_error(grpc_context, as_error(exc))

    def ListUsers(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("list_users", request, grpc_context, pb.ListUsersResponse)

    def GetUser(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("get_user", request, grpc_context, pb.GetUserResponse)

    def DeleteUser(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("delete_user", request, grpc_context, pb.DeleteUserResponse)

    def GalleryStats(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return self._grpc("gallery_stats", request, grpc_context, pb.GalleryStatsResponse)

    def Check(self, request: Any, grpc_context: Any) -> ProtoMessage:
        """grpc.health.v1: SERVING once this replica is up (no key needed)."""
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
