"""Micro-batching across requests for the model deployments, in place of ``serve.batch``, for
the two things overload needs and ``serve.batch`` cannot do:

- **A batch is formed only from live calls.** A call whose deadline passed while it waited,
  or whose caller left (its request was cancelled), is dropped when the batch is formed,
  answered `DeadlineExceeded` if anyone still listens, and counted
  (``facegallery_shed_total``): it costs neither CPU nor a slot in the batch.
- **Interactive calls go first, bulk ones keep a bounded share.** Identify, verify and detect
  (``interactive``: a caller waits) fill a batch before enrollment (``bulk``); while both
  wait, bulk calls get at least ``bulk_share`` of each batch, so a bulk enrollment never
  starves identify, and identify under a burst never holds enrollment to more than that
  share's slowdown.

Like ``serve.batch``: a batch runs once ``max_batch_size`` is reached (counted in the unit
``size_of`` gives: images, faces) or ``wait_s`` after its first call arrived; one batch runs
at a time per replica."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from facegallery.core.deadline import Priority, check_deadline, expired, left_reason
from facegallery.core.errors import DeadlineExceeded
from facegallery.core.telemetry import BATCH_SIZE, SHED

T = TypeVar("T")
R = TypeVar("R")
PRIORITIES: tuple[Priority, ...] = ("interactive", "bulk")


@dataclass
class _Call(Generic[T, R]):
    item: T
    size: int
    deadline: float | None
    priority: Priority
    future: asyncio.Future[R] = field(repr=False)
    taken: bool = False  # in a batch: its work has begun


class DeadlineBatcher(Generic[T, R]):
    """Batches calls of one deployment method; ``run`` answers a batch in order."""

    def __init__(
        self,
        stage: str,
        run: Callable[[list[T]], Awaitable[list[R]]],
        max_batch_size: int,
        wait_s: float,
        bulk_share: float,
        size_of: Callable[[T], int] = lambda _: 1,
    ) -> None:
        self.stage = stage
        self.run = run
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self.bulk_share = bulk_share
        self.contended = 0  # slots served while both classes waited, and bulk's part of them
        self.contended_bulk = 0.0
        self.size_of = size_of
        self.queues: dict[Priority, deque[_Call[T, R]]] = {p: deque() for p in PRIORITIES}
        self._arrived = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    async def __call__(self, item: T, deadline: float | None, priority: Priority) -> R:
        """The call's answer, once its batch ran; `DeadlineExceeded` when its deadline
        passes first. Cancelling the awaiting task (the caller left) takes it out."""
        check_deadline(self.stage, deadline)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        call = _Call(item, self.size_of(item), deadline, priority, future)
        self.queues[priority].append(call)
        self._arrived.set()
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._batches())
        try:
            return await asyncio.shield(call.future)
        except asyncio.CancelledError:
            if not call.future.done():
                call.future.cancel()
                if not call.taken:  # still queued: it leaves unserved, costing nothing
                    SHED.labels(left_reason(call.deadline), self.stage).inc()
            raise

    async def _batches(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            while self._waiting():
                await self._fill()
                batch = self._take()
                if batch:
                    await self._run(batch)

    def _waiting(self) -> int:
        return sum(c.size for q in self.queues.values() for c in q if not c.future.done())

    async def _fill(self) -> None:
        """Wait up to ``wait_s`` for the batch to fill (not at all once it is full)."""
        until = time.monotonic() + self.wait_s
        while self._waiting() < self.max_batch_size and (left := until - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except TimeoutError:
                return

    def _take(self) -> list[_Call[T, R]]:
        """Live calls only. While both classes wait, bulk gets its share of the slots served
        so far under contention (a running count, so it holds at any batch size, even one);
        otherwise whoever waits has the whole batch, interactive first."""
        waiting = {p: any(not c.future.done() for c in self.queues[p]) for p in PRIORITIES}
        bulk_room = self.max_batch_size if waiting["bulk"] else 0
        if waiting["bulk"] and waiting["interactive"]:
            owed = self.bulk_share * (self.contended + self.max_batch_size) - self.contended_bulk
            bulk_room = min(self.max_batch_size, max(0, round(owed)))
        batch: list[_Call[T, R]] = []
        room = self._pop("interactive", self.max_batch_size - bulk_room, batch)
        self._pop("bulk", room + bulk_room, batch)
        self._pop("interactive", self.max_batch_size - sum(c.size for c in batch), batch)
        if waiting["bulk"] and waiting["interactive"]:
            self.contended += sum(c.size for c in batch)
            self.contended_bulk += sum(c.size for c in batch if c.priority == "bulk")
            # What bulk is owed is capped at one batch: a share it could not use (it waited
            # with less than its share) is not banked to starve interactive later.
            floor = self.bulk_share * self.contended - self.max_batch_size
            self.contended_bulk = max(self.contended_bulk, floor)
        return batch

    def _pop(self, priority: Priority, room: int, batch: list[_Call[T, R]]) -> int:
        """Move live calls that fit ``room`` from the queue into ``batch``; the room left. A
        call larger than a whole batch goes alone (nothing else could ever make room)."""
        queue = self.queues[priority]
        while queue:
            call = queue[0]
            if call.future.done():  # cancelled by its caller
                queue.popleft()
                continue
            if expired(call.deadline):
                queue.popleft()
                SHED.labels("expired", self.stage).inc()
                call.future.set_exception(
                    DeadlineExceeded(
                        f"the call's deadline passed while it waited for the {self.stage}"
                    )
                )
                continue
            if call.size > room and (batch or call.size <= self.max_batch_size):
                break
            queue.popleft()
            call.taken = True
            batch.append(call)
            room -= call.size
        return room

    async def _run(self, batch: list[_Call[T, R]]) -> None:
        """Answer every call of the batch, whatever happens: its answer, or the failure
        (a batcher that is itself cancelled fails its batch and stops)."""
        BATCH_SIZE.labels(self.stage).observe(sum(c.size for c in batch))
        try:
            answers = await self.run([c.item for c in batch])
            for call, answer in zip(batch, answers, strict=True):
                if not call.future.done():
                    call.future.set_result(answer)
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else RuntimeError("the batcher stopped")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
