"""A call's deadline as the transports carry it, absolute wall-clock time from here on
(``core.deadline``): over HTTP the ``x-request-timeout`` header (seconds from now, like
gRPC's own timeout); over gRPC the caller's own deadline, carried from Serve's proxy as
``facegallery-deadline`` metadata (`serving.proxy`, which drops any copy a caller sent);
else ``serving.deadline_s`` from now. A value that is not a positive finite number is the
caller's error; none reaches past ``serving.max_deadline_s`` from now."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from facegallery.core.config import ServingSettings
from facegallery.core.errors import InvalidInput
from facegallery.wire.metadata import DEADLINE_METADATA, TIMEOUT_HEADER


def http_deadline(headers: Mapping[str, str], serving: ServingSettings) -> float:
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None:
        return time.time() + serving.deadline_s
    return time.time() + min(_positive(raw, TIMEOUT_HEADER), serving.max_deadline_s)


def grpc_deadline(metadata: Mapping[str, str], serving: ServingSettings) -> float:
    raw = metadata.get(DEADLINE_METADATA)
    now = time.time()
    if raw is None:
        return now + serving.deadline_s
    return min(_positive(raw, "the call's deadline"), now + serving.max_deadline_s)


def _positive(raw: str, name: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InvalidInput(f"{name} must be a positive number of seconds, got {raw!r}")
    return value
