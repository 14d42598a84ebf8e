"""The deadline and the priority a call carries through every stage, as context variables:
the gateway sets them once per call, and whatever runs for that call (the servicer, the
use case, the remote pipeline that calls the model deployments) reads them without every
signature in between growing two arguments. A deadline is absolute wall-clock time
(seconds since the epoch), so it means the same in every process it travels to.

Priorities: ``interactive`` (a caller waits: identify, verify, detect) and ``bulk``
(enrollment jobs, which nobody waits on second by second)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from facegallery.core.errors import CallCancelled, DeadlineExceeded
from facegallery.core.telemetry import SHED

Priority = Literal["interactive", "bulk"]

_DEADLINE: ContextVar[float | None] = ContextVar("facegallery_deadline", default=None)
_PRIORITY: ContextVar[Priority] = ContextVar("facegallery_priority", default="interactive")
_LEFT: ContextVar[threading.Event | None] = ContextVar("facegallery_caller_left", default=None)


@contextmanager
def call_scope(
    deadline: float | None,
    priority: Priority = "interactive",
    caller_left: threading.Event | None = None,
) -> Iterator[None]:
    """Run the block as one call with this deadline (None: none) and priority;
    ``caller_left`` is set by the transport when the caller goes away."""
    tokens = _DEADLINE.set(deadline), _PRIORITY.set(priority), _LEFT.set(caller_left)
    try:
        yield
    finally:
        _DEADLINE.reset(tokens[0])
        _PRIORITY.reset(tokens[1])
        _LEFT.reset(tokens[2])


def current_deadline() -> float | None:
    return _DEADLINE.get()


def current_priority() -> Priority:
    return _PRIORITY.get()


def remaining_s(deadline: float | None = None) -> float | None:
    """Seconds left before ``deadline`` (default: the current call's); None without one."""
    deadline = current_deadline() if deadline is None else deadline
    return None if deadline is None else deadline - time.time()


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.time() >= deadline


def caller_left() -> bool:
    left = _LEFT.get()
    return left is not None and left.is_set()


def left_reason(deadline: float | None) -> str:
    """How a call whose caller left is counted when dropped: ``expired`` once its deadline
    has passed (a gRPC caller leaves at its own deadline, which the service carries: the
    deadline is why, whichever of the two the service notices first), else ``cancelled``."""
    return "expired" if expired(deadline) else "cancelled"


def check_deadline(stage: str, deadline: float | None = None) -> None:
    """Raise `CallCancelled` when the caller left, `DeadlineExceeded` when the deadline has
    passed (each counted with the stage it was dropped at, `left_reason`): called at every
    stage boundary, before the stage's work."""
    deadline = current_deadline() if deadline is None else deadline
    if caller_left():
        SHED.labels(left_reason(deadline), stage).inc()
        raise CallCancelled(f"the caller left before the {stage} stage; dropped")
    if expired(deadline):
        SHED.labels("expired", stage).inc()
        raise DeadlineExceeded(f"the call's deadline passed before the {stage} stage; dropped")
