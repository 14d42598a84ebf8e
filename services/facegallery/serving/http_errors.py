"""An error as an HTTP answer: the status, the API's ErrorResponse body, and Retry-After.
Light on purpose (starlette and the taxonomy only): Serve's HTTP proxy imports it too."""

from __future__ import annotations

from starlette.responses import JSONResponse

from facegallery.core.errors import FaceGalleryError


def error_response(error: FaceGalleryError) -> JSONResponse:
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(error.body(), status_code=error.http_status, headers=headers)
