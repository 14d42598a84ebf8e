"""Admission in Serve's proxies: a burst is refused where it arrives, before it costs an
actor call.

The gateway's admission (`serving.admission`) refuses a call before its key and body are
looked at, but a refused call has still crossed the proxy, been routed, pickled and sent to
a gateway replica, and its answer sent back: under a burst of four times the capacity on
two cores, those refusals took a third of the CPU the models needed, and the slowest took
190 ms. So each proxy runs the same policy on what passes through it, for the calls it can
weigh without reading their bodies: the single-image model calls (detect, identify and
verify, over HTTP by route and over gRPC by method), one image each. Little's law holds for
one proxy's share of the traffic as for the whole (its calls in flight drain at the rate its
calls complete), so the proxies of a multi-node cluster need not share any state. Batches
and everything else go on to the gateway, whose admission, by images over all proxies'
traffic, still decides them.

A refusal is the gateway's: RESOURCE_EXHAUSTED / 429 with Retry-After and the API's error
body, counted in ``facegallery_shed_total{reason="admission", stage="proxy"}`` and in
``facegallery_requests_total``. The proxy writes its metrics to the node's metrics
directory like a replica does (the node's environment names it), so the node's exporter
serves them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from typing import Any

import grpc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from facegallery.core.config import ServingSettings
from facegallery.core.errors import FaceGalleryError, Overloaded
from facegallery.core.telemetry import REQUESTS
from facegallery.serving.admission import Admission
from facegallery.serving.deadlines import http_deadline
from facegallery.serving.grpc_errors import set_grpc_error
from facegallery.serving.http_errors import error_response

HTTP_ROUTES = {
    "detect": re.compile(r"/v1/detect"),
    "identify": re.compile(r"/v1/galleries/[^/]+/identify"),
    "verify": re.compile(r"/v1/galleries/[^/]+/users/[^/]+/verify"),
}
"""The single-image model calls' routes (POST), by operation."""
GRPC_METHODS = {
    f"/facegallery.v1.FaceGalleryService/{method}": operation
    for method, operation in (("Detect", "detect"), ("Identify", "identify"), ("Verify", "verify"))
}
"""The same calls' gRPC methods."""

Handler = Callable[[Any, Any], Awaitable[Any]]
_GRPC_DOOR: list[Door] = []  # the door the wrapped gRPC handlers use (admit_grpc_calls)


class Door:
    """One proxy's admission for the single-image model calls (one event loop: no lock
    is contended, `Admission`'s is kept for its other user)."""

    def __init__(self, serving: ServingSettings) -> None:
        self.serving = serving
        self.admission = Admission(serving.admission, stage="proxy")

    @contextmanager
    def admitted(self, operation: str, protocol: str, remaining_s: float) -> Any:
        """Admit one call (or raise `Overloaded`, counted); yields a dict whose ``served``
        the caller sets when the call was answered OK, which then counts toward the rate."""
        try:
            ticket = self.admission.admit(1, remaining_s)
        except Overloaded:
            REQUESTS.labels(operation, protocol, "RESOURCE_EXHAUSTED").inc()
            raise
        outcome = {"served": False}
        try:
            yield outcome
        finally:
            self.admission.done(ticket, outcome["served"])

    def grpc_remaining_s(self, context: Any) -> float:
        remaining = context.time_remaining()
        if remaining is None:
            return self.serving.deadline_s
        return float(min(remaining, self.serving.max_deadline_s))


def http_operation(scope: Scope) -> str | None:
    """The single-image model operation an HTTP request calls, or None."""
    if scope["type"] != "http" or scope.get("method") != "POST":
        return None
    path = scope.get("path", "")
    return next((op for op, route in HTTP_ROUTES.items() if route.fullmatch(path)), None)


class HttpDoor:
    """Pure ASGI middleware: `Door` for the single-image model routes."""

    def __init__(self, app: ASGIApp, door: Door) -> None:
        self.app = app
        self.door = door

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = http_operation(scope)
        if operation is None:
            await self.app(scope, receive, send)
            return
        # The first of a repeated header wins, as in the gateway (Starlette's Headers).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        try:
            remaining = http_deadline(headers, self.door.serving) - time.time()
        except FaceGalleryError:  # a malformed deadline: the gateway answers it, in its words
            await self.app(scope, receive, send)
            return
        try:
            with self.door.admitted(operation, "http", remaining) as outcome:

                async def observed_send(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        outcome["served"] = message["status"] == 200
                    await send(message)

                await self.app(scope, receive, observed_send)
        except Overloaded as refusal:
            await error_response(refusal)(scope, receive, send)


def admit_grpc_calls(door: Door) -> None:
    """Wrap the handlers Serve's gRPC proxy makes for the single-image model methods so
    that `door` admits each call first (wrapped once per process; a later call only
    replaces the door). Serve offers no hook here (its gRPC server takes no interceptors),
    so this wraps ``gRPCProxy.service_handler_factory``, which Serve calls after the proxy
    callback ran: a Ray upgrade must keep tests/serving/test_overload.py's gRPC refusal
    test green."""
    from ray.serve._private.proxy import gRPCProxy
    from ray.serve._private.proxy_request_response import gRPCStreamingType

    _GRPC_DOOR[:] = [door]
    factory = gRPCProxy.service_handler_factory
    if getattr(factory, "admits", False):
        return

    def admitting(self: gRPCProxy, service_method: str, streaming_type: Any) -> Handler:
        handler: Handler = factory(self, service_method, streaming_type)
        operation = GRPC_METHODS.get(service_method)
        if operation is None or streaming_type != gRPCStreamingType.UNARY_UNARY:
            return handler

        async def admitted(request: Any, context: Any) -> Any:
            (door,) = _GRPC_DOOR
            try:
                with door.admitted(operation, "grpc", door.grpc_remaining_s(context)) as outcome:
                    response = await handler(request, context)
                    # grpc.aio keeps the code as an int (0: unset or OK); either form is read.
                    outcome["served"] = context.code() in (None, 0, grpc.StatusCode.OK)
                    return response
            except Overloaded as refusal:
                set_grpc_error(context, refusal)
                return b""

        return admitted

    admitting.admits = True  # type: ignore[attr-defined]
    gRPCProxy.service_handler_factory = admitting  # type: ignore[method-assign]
