"""The error taxonomy, and its one mapping to gRPC status codes and HTTP statuses.

Every public entry point raises one of these with a message a person can act on. Transports
(CLI, HTTP, gRPC) never invent codes of their own: they read ``grpc_code`` / ``http_status``.
"""

from __future__ import annotations

import logging
import re
import uuid

log = logging.getLogger(__name__)
_CREDENTIALS = re.compile(r"://.*@")


class FaceGalleryError(Exception):
    """Base of every error the service reports to a caller."""

    grpc_code: str = "INTERNAL"
    http_status: int = 500
    reason: str = "internal"

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s  # sent as Retry-After with 429 and 503

    def body(self) -> dict[str, dict[str, str]]:
        """The error as an HTTP answer's JSON body (the API's ErrorResponse)."""
        return {"error": {"code": self.grpc_code, "reason": self.reason, "message": self.message}}


class InvalidInput(FaceGalleryError):
    """The request itself is wrong: fix the input and retry."""

    grpc_code = "INVALID_ARGUMENT"
    http_status = 400
    reason = "invalid_input"


class InvalidImage(InvalidInput):
    """Image bytes that cannot or must not be decoded (type, size, corruption)."""

    reason = "invalid_image"


class ImageTooLarge(InvalidImage):
    """Image over the configured byte or pixel limit."""

    reason = "image_too_large"


class Unauthenticated(FaceGalleryError):
    grpc_code = "UNAUTHENTICATED"
    http_status = 401
    reason = "unauthenticated"


class PermissionDenied(FaceGalleryError):
    grpc_code = "PERMISSION_DENIED"
    http_status = 403
    reason = "permission_denied"


class NotFound(FaceGalleryError):
    grpc_code = "NOT_FOUND"
    http_status = 404
    reason = "not_found"


class AlreadyExists(FaceGalleryError):
    grpc_code = "ALREADY_EXISTS"
    http_status = 409
    reason = "already_exists"


class FailedPrecondition(FaceGalleryError):
    """The system is not in a state to do this yet (e.g. models not prepared)."""

    grpc_code = "FAILED_PRECONDITION"
    http_status = 412
    reason = "failed_precondition"


class Overloaded(FaceGalleryError):
    """Too much work queued: retry later."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 429
    reason = "overloaded"


class DeadlineExceeded(FaceGalleryError):
    """The call's deadline passed before its answer was ready: the work was dropped where it
    stood (and counted there), never finished for nobody."""

    grpc_code = "DEADLINE_EXCEEDED"
    http_status = 504
    reason = "deadline_exceeded"


class CallCancelled(FaceGalleryError):
    """The caller left (disconnected, cancelled) before the answer: the work was dropped."""

    grpc_code = "CANCELLED"
    http_status = 499
    reason = "cancelled"


class PayloadTooLarge(FaceGalleryError):
    """A request body or message over its bound, refused before it is read."""

    grpc_code = "RESOURCE_EXHAUSTED"
    http_status = 413
    reason = "payload_too_large"


class Unavailable(FaceGalleryError):
    """A dependency (Milvus, Redis, a deployment) is not reachable right now."""

    grpc_code = "UNAVAILABLE"
    http_status = 503
    reason = "unavailable"


class Restarting(Unavailable):
    """A model deployment's replica (or its whole node) is gone and Serve is replacing it:
    the same work succeeds later and says nothing about the request, so an enrollment job
    meeting it is handed back without using up one of its attempts. Callers see UNAVAILABLE /
    503 with Retry-After, like any Unavailable."""


def error_for(
    code: str, message: str, reason: str | None = None, retry_after_s: int | None = None
) -> FaceGalleryError:
    """The error an answer stands for (the clients turn statuses back into these): the class
    with that ``reason``, else the most general class with that gRPC ``code``."""
    classes = _subclasses(FaceGalleryError)
    chosen = next((c for c in classes if reason and c.reason == reason), None)
    chosen = chosen or next((c for c in classes if c.grpc_code == code), FaceGalleryError)
    return chosen(message, retry_after_s)


def _subclasses(cls: type[FaceGalleryError]) -> list[type[FaceGalleryError]]:
    """``cls`` and its subclasses, parents before children."""
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def redacted(url: str) -> str:
    """``url`` without its credentials (``redis://:secret@host/0`` -> ``redis://***@host/0``):
    every message that names a server's address is built with this, since messages reach
    callers and logs. Everything between the scheme and the last ``@`` goes, so a password
    holding ``/``, ``?`` or ``#`` (which a URL parser would not see as user info) goes too."""
    return _CREDENTIALS.sub("://***@", url, count=1)


def as_error(exc: BaseException) -> FaceGalleryError:
    """The caller's view of any failure: ours as they are, anything else as one line with a
    reference to the traceback in the log (never the traceback, a path or an address)."""
    if isinstance(exc, FaceGalleryError):
        return exc
    reference = uuid.uuid4().hex[:12]
    log.error("internal error %s", reference, exc_info=exc)
    return FaceGalleryError(f"internal error (reference {reference}); the service keeps running")
