"""What runs inside Serve's proxies: a bound on what the HTTP proxy holds of a request body,
the gRPC caller's deadline carried to the gateway, and admission for the calls a proxy can
weigh (`facegallery.serving.door`).

Serve's proxy reads a request's body from the client as fast as it arrives and queues it for
the replica, whether or not the replica reads it: a client streaming a huge chunked body
fills the proxy's memory until the gateway answers. This middleware runs inside the proxy
(Serve calls `middlewares` at start, named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``)
and counts body bytes as the proxy receives them: a ``Content-Length`` over the bound is
refused before the request is forwarded, and a body that grows past it is cut off (the
replica sees the client leave) and answered 413. The bound is ``serving.max_request_bytes``,
which reaches the proxy the way the gRPC proxy's maximum message size does: in Ray's
environment (`facegallery.serving.app.ray_env`), so both transports have one ceiling.

Serve's gRPC proxy hands the gateway a copy of the call's context without its deadline
(``time_remaining``). `carry_grpc_deadlines` adds it to the copied invocation metadata as
``facegallery-deadline`` (absolute, seconds since the epoch), where the gateway reads it, so
a gRPC caller's own deadline travels with the work like the HTTP header does.

Settings reach the proxies through Ray's environment, set before Ray starts: the body bound
in Ray's own gRPC variable, the ``serving`` section (admission's knobs, the deadlines) as JSON
in ``FACEGALLERY_PROXY_SERVING``; the node's metrics directory in ``FACEGALLERY_NODE_METRICS_DIR``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facegallery.core.config import METRICS_DIR_ENV, NODE_METRICS_DIR_ENV, ServingSettings
from facegallery.serving.body import too_large
from facegallery.serving.http_errors import error_response
from facegallery.wire.metadata import DEADLINE_METADATA

MAX_BYTES_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "facegallery.serving.proxy:middlewares"
SERVING_ENV = "FACEGALLERY_PROXY_SERVING"


def middlewares() -> list[Middleware]:
    """Serve's proxy callback (called once in each proxy process, before its HTTP and gRPC
    servers are built): the gRPC deadline's carrier, the body bound and the admission door
    when Ray's environment names them."""
    carry_grpc_deadlines()
    layers = []
    if os.environ.get(MAX_BYTES_ENV):
        layers.append(Middleware(BodyLimit, max_bytes=int(os.environ[MAX_BYTES_ENV])))
    if os.environ.get(SERVING_ENV):
        serving = ServingSettings.model_validate_json(os.environ[SERVING_ENV])
        # Before prometheus_client is first imported here (by the door): it picks its
        # multiprocess mode then. Only in this process: Ray's own must not have it.
        node_dir = os.environ.get(NODE_METRICS_DIR_ENV) or str(serving.metrics_dir)
        os.environ.setdefault(METRICS_DIR_ENV, node_dir)
        from facegallery.serving.door import Door, HttpDoor, admit_grpc_calls

        door = Door(serving)
        admit_grpc_calls(door)
        layers.append(Middleware(HttpDoor, door=door))
    return layers


def carry_grpc_deadlines() -> None:
    """Wrap Serve's gRPC context copy so that it keeps the caller's deadline (once)."""
    from ray.serve.grpc_util import RayServegRPCContext

    copy = RayServegRPCContext.__init__
    if getattr(copy, "carries_deadline", False):
        return

    def with_deadline(self: RayServegRPCContext, grpc_context: Any) -> None:
        copy(self, grpc_context)
        # Only the proxy says what the deadline is: a copy the caller sent is dropped.
        self._invocation_metadata = [
            (k, v) for k, v in self._invocation_metadata if k != DEADLINE_METADATA
        ]
        self._invocation_metadata_dict.pop(DEADLINE_METADATA, None)
        remaining = grpc_context.time_remaining()
        if remaining is not None:
            entry = (DEADLINE_METADATA, repr(time.time() + remaining))
            self._invocation_metadata.append(entry)
            self._invocation_metadata_dict[entry[0]] = entry[1]

    with_deadline.carries_deadline = True  # type: ignore[attr-defined]
    RayServegRPCContext.__init__ = with_deadline  # type: ignore[method-assign]


class BodyLimit:
    """Pure ASGI middleware: refuse or cut off an HTTP body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large(int(declared), self.max_bytes))(scope, receive, send)
            return
        state: dict[str, Any] = {"size": 0, "cut": False, "app_answered": False}

        async def counted_receive() -> Message:
            if state["cut"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["size"] += len(message.get("body", b""))
                if state["size"] > self.max_bytes:
                    state["cut"] = True
                    if not state["app_answered"]:
                        await error_response(too_large(state["size"], self.max_bytes))(
                            scope, receive, send
                        )
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["cut"] and not state["app_answered"]:
                return  # this middleware answered: the replica's late answer goes nowhere
            if message["type"] == "http.response.start":
                state["app_answered"] = True
            await send(message)

        await self.app(scope, counted_receive, guarded_send)
