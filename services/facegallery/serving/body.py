"""Reading an HTTP request's body within its bound, and only after the caller is known.

A body is the one part of a request an attacker controls in size. Each operation has a
bound (`body_bound`): a ``Content-Length`` over it is refused before a byte is read, and a
body without one (chunked) is counted while it streams and refused the moment it passes the
bound, so the gateway never holds more than the bound of any request. The transport calls
`read_payload` only after the key in the headers has been checked, so a caller without a
valid key costs the headers alone. A body that cannot be parsed (malformed JSON, a form
without a boundary, a client that hung up halfway) is the caller's error: 400, not 500.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from facegallery.core.config import Settings
from facegallery.core.errors import InvalidInput, PayloadTooLarge

NO_IMAGE_BYTES = 64 * 1024
"""The bound of a call that carries no image (ids, page tokens, options)."""
MANY_IMAGES = ("identify_batch", "enroll")
ONE_IMAGE = ("detect", "identify", "verify")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def body_bound(settings: Settings, operation: str) -> int:
    """The most bytes ``operation``'s request may hold (HTTP body or gRPC message)."""
    ceiling = settings.serving.max_request_bytes
    if operation in MANY_IMAGES:
        return ceiling
    if operation in ONE_IMAGE:
        return min(ceiling, base64_size(settings.decode.max_bytes) + NO_IMAGE_BYTES)
    return NO_IMAGE_BYTES


def base64_size(nbytes: int) -> int:
    return 4 * ((nbytes + 2) // 3)


def check_declared_length(request: Request, limit: int) -> None:
    """Refuse from the headers alone a body that says it is over ``limit``."""
    declared = request.headers.get("content-length")
    if declared is None:
        return
    if not declared.isdigit():
        raise InvalidInput(f"Content-Length must be a number of bytes, got {declared[:40]!r}")
    if int(declared) > limit:
        raise too_large(int(declared), limit)


def too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request holds {size:,} bytes or more; this call takes at most {limit:,} "
        "(send fewer or smaller images)"
    )


async def read_bounded(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it passes ``limit`` bytes (its declared length
    was checked from the headers before, with `check_declared_length`)."""
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise InvalidInput(
            "the client closed the connection before sending the whole body"
        ) from None
    body = b"".join(chunks)
    request._body = body  # starlette's form parser reads the body from here once it is set
    return body


async def read_payload(request: Request, limit: int, **path: str) -> dict[str, Any]:
    """The request's fields: a JSON object, or a form (files ``image`` / ``images``; other
    fields as values), with the path's ids on top."""
    if request.method in ("GET", "DELETE"):
        payload: dict[str, Any] = dict(request.query_params)
    else:
        body = await read_bounded(request, limit)
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(_FORMS):
            payload = await _form(request)
        else:
            payload = _json_object(body)
    for name, value in path.items():
        if payload.setdefault(name, value) != value:
            raise InvalidInput(f"{name} in the body ({payload[name]!r}) differs from the path")
    return payload


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise InvalidInput("the request body must be a JSON object")
    return payload


async def _form(request: Request) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    try:
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
    except (HTTPException, MultiPartException, ValueError, KeyError) as exc:
        why = exc.detail if isinstance(exc, HTTPException) else str(exc) or type(exc).__name__
        raise InvalidInput(
            f"the form cannot be read ({why}): send multipart/form-data "
            "with its boundary and well-formed parts, or a JSON object"
        ) from None
    return payload
