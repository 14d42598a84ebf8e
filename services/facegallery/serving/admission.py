"""Admission control on time: refuse a call at the door, fast, when the queueing time it
would meet is longer than its deadline allows, instead of letting it wait for an answer
nobody will read.

The policy (one per gateway replica, and one per Serve proxy for the calls it can weigh:
`serving.door`) is the queueing estimate of Little's law, the same
decision Triton's queue policy makes with ``timeout_action: REJECT`` but made before the
call is queued: the work ahead of a new call (the images in flight, its own included)
drains at the rate the service measured completing them over the last ``window_s``, so it
would be answered after about ``(in_flight + cost) / rate`` seconds. When that exceeds
``headroom`` of the call's remaining deadline, the call is refused with RESOURCE_EXHAUSTED /
429 and a Retry-After of the time to drain what is in flight. While fewer than
``min_in_flight`` images are in flight ahead of it, a call is admitted whatever it weighs (an
idle service refuses nothing, and a cold one measures its rate). Unlike a fixed concurrency
limit, the limit follows the measured rate: more replicas or a GPU raise it, a CPU-heavy
neighbour lowers it, with nothing to tune.

Only interactive calls are admitted here; enrollment is bounded by its queue, and its
workers' load shows up in the measured rate (the model deployments give it a bounded
share: ``serving.batching``)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass

from facegallery.core.config import AdmissionSettings
from facegallery.core.errors import Overloaded
from facegallery.core.telemetry import ADMITTED, EXPECTED_WAIT_SECONDS, SHED


@dataclass(frozen=True)
class Ticket:
    """An admitted call: what it weighs (images), to be handed back when it ends."""

    cost: int


class Admission:
    """In-flight work and measured throughput of one gateway replica or proxy (``stage``,
    as its metrics name it; thread-safe: the gateway's calls run in worker threads)."""

    def __init__(self, settings: AdmissionSettings, stage: str) -> None:
        self.settings = settings
        self.stage = stage
        self.in_flight = 0
        self.completions: deque[tuple[float, int]] = deque()  # (when, images)
        self.lock = threading.Lock()

    def admit(self, cost: int, remaining_s: float | None) -> Ticket:
        """Let the call in, or raise `Overloaded` with a Retry-After."""
        with self.lock:
            wait = self.expected_wait_s(cost)
            EXPECTED_WAIT_SECONDS.set(wait if math.isfinite(wait) else -1.0)
            busy = self.in_flight >= self.settings.min_in_flight  # work ahead of this call
            budget = remaining_s * self.settings.headroom if remaining_s is not None else None
            if self.settings.enabled and busy and budget is not None and wait > budget:
                SHED.labels("admission", self.stage).inc()
                retry = self.retry_after_s()
                raise Overloaded(
                    f"the service is at capacity: a call now would wait about {wait:.1f} s, "
                    f"longer than its deadline allows ({remaining_s:.1f} s); retry in {retry} s",
                    retry_after_s=retry,
                )
            self.in_flight += cost
        ADMITTED.labels("interactive", self.stage).inc()
        return Ticket(cost)

    def done(self, ticket: Ticket, served: bool) -> None:
        """The call ended: its images leave the queue and, when it was served (not dropped
        or failed early, which would flatter the rate), count toward the measured rate."""
        now = time.monotonic()
        with self.lock:
            self.in_flight -= ticket.cost
            if served:
                self.completions.append((now, ticket.cost))
            self._forget(now)

    def rate(self) -> float:
        """Images completed per second over the window (0 until anything completed)."""
        now = time.monotonic()
        self._forget(now)
        if not self.completions:
            return 0.0
        span = max(now - self.completions[0][0], self.settings.window_s / 4)
        return sum(n for _, n in self.completions) / span

    def expected_wait_s(self, cost: int) -> float:
        rate = self.rate()
        return (self.in_flight + cost) / rate if rate > 0 else math.inf

    def retry_after_s(self) -> int:
        rate = self.rate()
        return max(1, math.ceil(self.in_flight / rate)) if rate > 0 else 1

    def _forget(self, now: float) -> None:
        while self.completions and self.completions[0][0] < now - self.settings.window_s:
            self.completions.popleft()
