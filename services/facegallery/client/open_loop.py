"""Calls at a fixed rate whatever the answers, as a camera fleet makes them (a camera sends
its next frame on time, not when the last answer came): the load under which the cluster's
failure checks and benchmarks watch a service lose a node and come back.

Every call's outcome is kept: when it was sent, how long it took, its status (``OK`` or the
gRPC name of the error the client raised) and the Retry-After it carried. From them,
`per_second` gives the timeline and `recovered_after` the moment from which every call
succeeded again."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType

from facegallery.client.grpc import GrpcClient
from facegallery.client.http import HttpClient
from facegallery.core.errors import FaceGalleryError

Caller = Callable[[], object]


@dataclass(frozen=True)
class Outcome:
    """One call: when it was due (``time.monotonic()``: a call that waited for a free
    thread shows its wait), how long it took from then, and how it ended."""

    sent_at: float
    seconds: float
    code: str  # OK, the error's gRPC status name, or an unexpected exception's type name
    retry_after_s: int | None


class OpenLoop:
    """Calls ``rate_per_s`` times a second until the ``with`` block ends. ``callers``:
    factories taken in turn (HTTP, gRPC, ...), each called once per thread to make that
    thread's caller (a client with its own connection); ``max_in_flight`` threads at most."""

    def __init__(
        self,
        callers: Sequence[Callable[[], Caller]],
        rate_per_s: float,
        max_in_flight: int = 64,
    ) -> None:
        self.callers = list(callers)
        self.interval = 1.0 / rate_per_s
        self.outcomes: list[Outcome] = []
        self.stop = threading.Event()
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=max_in_flight)
        self.pacer = threading.Thread(target=self._pace, daemon=True)

    def __enter__(self) -> OpenLoop:
        self.pacer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop.set()
        self.pacer.join()
        self.pool.shutdown(wait=True)

    def since(self, start: float) -> list[Outcome]:
        """The outcomes of the calls sent at or after ``start``, in the order sent."""
        return sorted((o for o in self.outcomes if o.sent_at >= start), key=lambda o: o.sent_at)

    def _pace(self) -> None:
        due, turn = time.monotonic(), 0
        while not self.stop.is_set():
            self.pool.submit(self._call, turn % len(self.callers), due)
            turn += 1
            due += self.interval
            self.stop.wait(max(0.0, due - time.monotonic()))

    def _call(self, which: int, due: float) -> None:
        code, retry_after = "OK", None
        try:
            made: dict[int, Caller] = self.local.__dict__.setdefault("callers", {})
            if which not in made:
                made[which] = self.callers[which]()
            made[which]()
        except FaceGalleryError as exc:
            code, retry_after = exc.grpc_code, exc.retry_after_s
        except Exception as exc:  # kept, never lost in the pool: a check must see it
            code = type(exc).__name__
        self.outcomes.append(Outcome(due, time.monotonic() - due, code, retry_after))


def identify_calls(
    http_url: str, grpc_target: str, api_key: str, gallery: str, image: bytes, deadline_s: float
) -> list[Callable[[], Caller]]:
    """Identify ``image`` over HTTP and over gRPC, in turn: one attempt each (a refusal is
    an outcome, not retried), with ``deadline_s``."""

    def http() -> Caller:
        client = HttpClient(http_url, api_key, deadline_s, attempts=1)
        return lambda: client.identify(gallery, image)

    def grpc() -> Caller:
        client = GrpcClient(grpc_target, api_key, deadline_s, attempts=1)
        return lambda: client.identify(gallery, image)

    return [http, grpc]


def per_second(outcomes: Sequence[Outcome], start: float) -> list[dict[str, int]]:
    """Calls sent in each second from ``start``, by status."""
    seconds: dict[int, Counter[str]] = {}
    for o in outcomes:
        seconds.setdefault(int(o.sent_at - start), Counter())[o.code] += 1
    last = max(seconds, default=-1)
    return [{"second": s, **seconds.get(s, Counter())} for s in range(last + 1)]


def recovered_after(outcomes: Sequence[Outcome], start: float, steady_s: int) -> float | None:
    """Seconds from ``start`` to the first second from which every call succeeded, in at
    least ``steady_s`` seconds each with calls; None when that has not happened yet."""
    timeline = per_second(outcomes, start)
    for first in range(len(timeline)):
        span = timeline[first:]
        good = [s for s in span if set(s) - {"second"} == {"OK"}]
        if len(span) >= steady_s and len(good) == len(span):
            return float(first)
    return None
