"""The Gateway deployment: the ingress for HTTP (FastAPI, /v1/...) and gRPC
(``facegallery.v1.FaceGalleryService`` and the standard health service). Both transports only
translate: the request becomes the schema's dict, `Api.call` does the work, the answer (or the
error, through `errors.py`'s one mapping) goes back in the transport's terms."""

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from google.protobuf import json_format
from google.protobuf.message import Message as ProtoMessage
from grpc_health.v1 import health_pb2
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.concurrency import run_in_threadpool

from facegallery.core import ids
from facegallery.core.config import Settings
from facegallery.core.deadline import call_scope, check_deadline, remaining_s
from facegallery.core.errors import FaceGalleryError, as_error
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.serving.admission import Admission
from facegallery.serving.api import Api
from facegallery.serving.body import body_bound, check_declared_length, read_payload, too_large
from facegallery.serving.deadlines import grpc_deadline, http_deadline
from facegallery.serving.deployments import WARM_UP_FRAME
from facegallery.serving.grpc_errors import set_grpc_error
from facegallery.serving.http_errors import error_response
from facegallery.serving.keys import KeyStore
from facegallery.serving.served_service import served_service
from facegallery.v1 import facegallery_pb2 as pb
from facegallery.wire import schemas as s
from facegallery.wire.metadata import API_KEY_HEADER

GRPC_SERVICERS = [
    "facegallery.v1.facegallery_pb2_grpc.add_FaceGalleryServiceServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
DOOR_THREADS = 8  # threads for key checks, apart from the operations' own
MODEL_OPERATIONS = frozenset({"detect", "identify", "identify_batch", "verify"})

http = FastAPI(
    title="facegallery",
    version="1",
    description="Face detection, 1:N identification, 1:1 verification and asynchronous "
    "enrollment. Send the API key as the x-api-key header, and the call's deadline as "
    "x-request-timeout (seconds; default serving.deadline_s). Images: multipart uploads "
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
        (409, "the idempotency key was used for another request"),
        (412, "the service cannot do this yet (e.g. the gallery has no calibration)"),
        (413, "the request is over its size bound"),
        (429, "at capacity: retry after Retry-After seconds"),
        (503, "a dependency is unavailable: retry after Retry-After seconds"),
        (504, "the call's deadline (x-request-timeout) passed before its answer"),
    ]
}


_JOB_LINKS = {
    name: {"operationId": name, "parameters": {"job_id": "$response.body#/job/job_id"}}
    for name in ("get_job", "watch_job")
}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI request body: the model as JSON, or its fields as a multipart form (the
    model's schema is added to the document's components by `_openapi`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "multipart/form-data": {"schema": {"type": "object"}},
            },
        }
    }


DOCUMENTED_MODELS = (
    s.WatchJobResponse,  # the watch stream's lines
    s.DetectRequest,
    s.IdentifyRequest,
    s.IdentifyBatchRequest,
    s.VerifyRequest,
    s.EnrollRequest,
)


def _openapi() -> dict[str, Any]:
    """The OpenAPI document, self-contained: the request models and the watch stream's
    lines (and the models they use) are in its components, and path ids carry their
    patterns."""
    if http.openapi_schema:
        return http.openapi_schema
    document = get_openapi(
        title=http.title, version=http.version, description=http.description, routes=http.routes
    )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for model in DOCUMENTED_MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[model.__name__] = schema
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                pattern = ids.PATH_PATTERNS.get(parameter["name"])
                if parameter["in"] == "path" and pattern is not None:
                    parameter["schema"]["pattern"] = f"^{pattern.pattern}$"
    http.openapi_schema = document
    return document


http.openapi = _openapi  # type: ignore[method-assign]


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


def _images_in(payload: Mapping[str, Any]) -> int:
    """What a call weighs for admission: its images."""
    images = payload.get("images")
    return len(images) if isinstance(images, list) else 1


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
        queue.ensure_durable()
        service = await served_service(config, detector, embedder)
        # Ready means ready: one call through each model deployment before this replica
        # answers anything (health included), so the first callers meet warm paths.
        frame = np.zeros(WARM_UP_FRAME, np.uint8)
        await detector.detect.remote((frame, False, False), None, "bulk")
        shape = await embedder.input_shape.remote()
        await embedder.embed.remote(np.zeros((1, *shape), np.uint8), None, "bulk")
        self.api = Api(service, queue, keys, config)
        self.admission = Admission(config.serving.admission, "gateway")
        self.door = anyio.CapacityLimiter(DOOR_THREADS)
        self.workers = workers  # bound so that the app deploys them

    async def _authenticate(self, token: str | None) -> Any:
        """The key, checked in threads of its own: a refusal at the door (a bad key,
        admission) never waits behind calls that hold the worker threads."""
        return await anyio.to_thread.run_sync(self.api.authenticate, token, limiter=self.door)

    @contextmanager
    def _admitted(self, cost: int, deadline: float) -> Iterator[None]:
        """Admission (`Admission`) for ``cost`` images, on the event loop and before the
        key and the body are looked at, so a refusal costs as little as it can and waits
        for no worker thread; the block's work counts toward the measured rate if it ends
        without an error. ``cost`` 0: not a model operation, nothing to admit."""
        if not cost:
            yield
            return
        check_deadline("gateway", deadline)  # spent already (queued before this replica, say)
        ticket = self.admission.admit(cost, remaining_s(deadline))
        served = False
        try:
            yield
            served = True
        finally:
            self.admission.done(ticket, served)

    def _scoped(
        self,
        operation: str,
        key: Any,
        payload: dict[str, Any] | ProtoMessage,
        deadline: float,
        left: threading.Event,
    ) -> BaseModel:
        """In a worker thread: the operation, with its deadline, priority and caller in
        its context (``core.deadline``) for every stage it reaches. A gRPC message becomes
        the schema's dict here, not on the event loop (it base64-encodes the images)."""
        with call_scope(deadline, "interactive", left):
            check_deadline("gateway")  # it may have waited for this thread
            fields = _as_dict(payload) if isinstance(payload, ProtoMessage) else payload
            return self.api.call(operation, key, fields)

    # HTTP -----------------------------------------------------------------------------------

    async def _http(
        self, operation: str, request: Request, status: int = 200, **path: str
    ) -> Response:
        """Headers first (the body's declared size, the deadline, admission, then the key),
        then the body within its bound, then the operation; a caller who leaves (Serve
        cancels this coroutine) has the work dropped at its next stage."""
        left = threading.Event()
        try:
            with self.api.counted(operation, "http"):
                limit = body_bound(self.api.settings, operation)
                check_declared_length(request, limit)
                deadline = http_deadline(request.headers, self.api.settings.serving)
                single = operation in MODEL_OPERATIONS and operation != "identify_batch"
                with self._admitted(int(single), deadline):
                    key = await self._authenticate(_token(request.headers))
                    payload = await read_payload(request, limit, **path)
                    self.api.check_counts(operation, payload)  # the input's bound comes first
                    batch = _images_in(payload) if operation == "identify_batch" else 0
                    with self._admitted(batch, deadline):
                        answer = await run_in_threadpool(
                            self._scoped, operation, key, payload, deadline, left
                        )
        except asyncio.CancelledError:
            left.set()
            raise
        except FaceGalleryError as error:
            return error_response(error)
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
        responses={202: {"links": _JOB_LINKS}, **_ERRORS},
        openapi_extra=_body(s.EnrollRequest),
    )
    async def enroll(self, gallery: str, user_id: str, request: Request) -> Response:
        return await self._http("enroll", request, 202, gallery=gallery, user_id=user_id)

    @http.get(
        "/v1/jobs/{job_id}",
        operation_id="get_job",
        response_model=s.GetJobResponse,
        responses=_ERRORS,
    )
    async def get_job(self, job_id: str, request: Request) -> Response:
        return await self._http("get_job", request, job_id=job_id)

    @http.get(
        "/v1/jobs/{job_id}/watch",
        operation_id="watch_job",
        responses={
            200: {
                "description": "One WatchJobResponse per line, each time the job changes",
                "content": {
                    "application/x-ndjson": {
                        "schema": {"$ref": "#/components/schemas/WatchJobResponse"}
                    }
                },
            },
            **_ERRORS,
        },
    )
    async def watch_job(self, job_id: str, request: Request) -> Response:
        """The job as newline-delimited JSON (one WatchJobResponse per change) until it ends."""
        stream = self.api.watch_job(_token(request.headers), job_id)
        try:
            with self.api.counted("watch_job", "http"):
                first = await anext(stream)
        except FaceGalleryError as error:
            return error_response(error)

        async def lines() -> AsyncIterator[bytes]:
            try:
                yield _ndjson(first)
                async for job in stream:
                    yield _ndjson(job)
            except FaceGalleryError as error:
                yield bytes(error_response(error).body) + b"\n"
            finally:
                await stream.aclose()

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
        """Readiness without a key: a gateway replica answers only once it and both model
        deployments have run a first call (their constructors warm them), so SERVING means
        the first callers meet warm models (the proxy's own /-/healthz only says Serve runs)."""
        return {"status": "SERVING", "model_id": self.api.service.model_id}

    # gRPC -----------------------------------------------------------------------------------

    async def _grpc(
        self, operation: str, request: ProtoMessage, context: Any, reply: type[ProtoMessage]
    ) -> ProtoMessage:
        """The deadline and admission first, then the key, then the message's size against
        the operation's bound (the proxy's maximum message size is the ceiling of every
        bound), then the operation; a caller who leaves has the work dropped."""
        left = threading.Event()
        try:
            with self.api.counted(operation, "grpc"):
                metadata = dict(context.invocation_metadata())
                deadline = grpc_deadline(metadata, self.api.settings.serving)
                cost = 0  # what admission weighs: a model operation's images
                if operation in MODEL_OPERATIONS:
                    batch = operation == "identify_batch"
                    images = list(request.images) if batch else [request.image]
                    self.api.check_counts(operation, {"images": images})  # the bound first
                    cost = len(images)
                with self._admitted(cost, deadline):
                    key = await self._authenticate(_token(metadata))
                    size, limit = request.ByteSize(), body_bound(self.api.settings, operation)
                    if size > limit:
                        raise too_large(size, limit)
                    answer = await run_in_threadpool(
                        self._scoped, operation, key, request, deadline, left
                    )
        except asyncio.CancelledError:
            left.set()
            raise
        except FaceGalleryError as error:
            set_grpc_error(context, error)
            return reply()
        return _proto(answer, reply)

    async def Detect(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("detect", request, grpc_context, pb.DetectResponse)

    async def Identify(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("identify", request, grpc_context, pb.IdentifyResponse)

    async def IdentifyBatch(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("identify_batch", request, grpc_context, pb.IdentifyBatchResponse)

    async def Verify(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("verify", request, grpc_context, pb.VerifyResponse)

    async def Enroll(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("enroll", request, grpc_context, pb.EnrollResponse)

    async def GetJob(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("get_job", request, grpc_context, pb.GetJobResponse)

    async def WatchJob(self, request: Any, grpc_context: Any) -> AsyncIterator[ProtoMessage]:
        stream = self.api.watch_job(_grpc_token(grpc_context), request.job_id)
        try:
            with self.api.counted("watch_job", "grpc"):
                first = await anext(stream)
            yield _proto(s.WatchJobResponse(job=first), pb.WatchJobResponse)
            async for job in stream:
                yield _proto(s.WatchJobResponse(job=job), pb.WatchJobResponse)
        except Exception as exc:
            # Serve sends a streaming call's context only with a message; raised with the
            # code set, the status reaches the caller (without the trailing metadata).
            error = as_error(exc)
            set_grpc_error(grpc_context, error)
            raise error from exc
        finally:
            await stream.aclose()

    async def ListUsers(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("list_users", request, grpc_context, pb.ListUsersResponse)

    async def GetUser(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("get_user", request, grpc_context, pb.GetUserResponse)

    async def DeleteUser(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("delete_user", request, grpc_context, pb.DeleteUserResponse)

    async def GalleryStats(self, request: Any, grpc_context: Any) -> ProtoMessage:
        return await self._grpc("gallery_stats", request, grpc_context, pb.GalleryStatsResponse)

    def Check(self, request: Any, grpc_context: Any) -> ProtoMessage:
        """grpc.health.v1: SERVING once this replica is up (no key needed)."""
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)
