"""An error as a gRPC answer: the status code, the message, and the reason and Retry-After
as trailing metadata. Light on purpose (grpc and the taxonomy only): Serve's gRPC proxy
uses it too (`serving.door`)."""

from __future__ import annotations

from typing import Any

import grpc

from facegallery.core.errors import FaceGalleryError
from facegallery.wire.metadata import REASON_METADATA, RETRY_AFTER


def set_grpc_error(context: Any, error: FaceGalleryError) -> None:
    context.set_code(grpc.StatusCode[error.grpc_code])
    context.set_details(error.message)
    trailing = [(REASON_METADATA, error.reason)]
    if error.retry_after_s is not None:
        trailing.append((RETRY_AFTER, str(error.retry_after_s)))
    context.set_trailing_metadata(trailing)
