"""A call's deadline as the transports carry it: over HTTP the ``x-request-timeout`` header
(seconds from now, like gRPC's own timeout), over gRPC the caller's own deadline (carried
from Serve's proxy as ``facegallery-deadline`` metadata, `serving.proxy`), else
``serving.deadline_s`` from now. Absolute wall-clock time from here on (``core.deadline``)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from facegallery.core.errors import InvalidInput
from facegallery.wire.metadata import DEADLINE_METADATA, TIMEOUT_HEADER


def deadline_of(headers: Mapping[str, str], default_s: float) -> float:
    """The call's absolute deadline; a malformed header is the caller's error."""
    carried = headers.get(DEADLINE_METADATA)
    if carried:
        return float(carried)
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return time.time() + default_s
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"{TIMEOUT_HEADER} must be a positive number of seconds, got {raw!r}")
    return time.time() + seconds
