"""How the clients spend a call's deadline: every attempt carries what is left of it (the
server drops work whose deadline passed), a refusal with Retry-After (RESOURCE_EXHAUSTED /
429, UNAVAILABLE / 503) is retried after that long, jittered so that a fleet refused together
does not come back together, and no attempt starts that could not finish before the
deadline: a call never outlives it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from facegallery.core.errors import DeadlineExceeded, Overloaded, Unavailable

T = TypeVar("T")
RETRIED = (Overloaded, Unavailable)


def within_deadline(
    send: Callable[[float], T],
    timeout_s: float,
    attempts: int,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[], float] = random.random,
) -> T:
    """``send(remaining_s)`` until it answers, at most ``attempts`` times, all within
    ``timeout_s``; the last refusal is raised when the deadline or the attempts run out."""
    deadline = time.monotonic() + timeout_s
    for attempt in range(1, attempts + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"the call's {timeout_s:g} s deadline passed before an answer")
        try:
            return send(remaining)
        except RETRIED as refused:
            if refused.retry_after_s is None or attempt == attempts:
                raise
            pause = refused.retry_after_s * (0.5 + jitter())  # 0.5x to 1.5x Retry-After
            if time.monotonic() + pause >= deadline:
                raise
            sleep(pause)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover
