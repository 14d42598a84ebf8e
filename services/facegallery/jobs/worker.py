"""The enrollment worker: claim a job, enroll under the user's lease, record, acknowledge.

Exactly-once *effect*, not exactly-once delivery: a worker that dies leaves its entry pending
and another claims it after ``claim_idle_ms``. Re-running a job changes nothing already
written, because ``FaceService.enroll`` writes deterministic template ids (a re-run rewrites
the same rows, and the cap sees them as the user's own), and the job is marked finished at
most once (``EnrollmentQueue.complete``). A per-user lease keeps two jobs for one user from
racing the per-user cap or the duplicate-identity check; it lapses with the worker (it lasts
``claim_idle_ms``), and a heartbeat renews it, and the job's entry, while a long job runs.

Fencing: a worker checks its lease before every write (the fence `FaceService.enroll` calls),
before finishing and before recording a failure; a worker stalled past ``claim_idle_ms``
(paused, swapping) whose job another worker took finds its lease gone at its next check and
stops there. Its heartbeat renews only a lease and an entry that are still its own. (A
check is not atomic with the write after it: a stall between the two can still let one
write through, which the deterministic template ids make a rewrite of the same rows.)

Failures: an input the service refuses outright (``InvalidInput``) fails the job at once;
anything else (the gallery unavailable, a crash inside a stage) is retried on a later
delivery, and after ``max_deliveries`` the job is dead-lettered with the last error. A job
whose workers die while running it (OOM-killed by its images, say) is dead-lettered after
``max_worker_losses`` such deaths, not redelivered until ``max_deliveries``. Redis out of
reach makes the loop wait and try again; it never ends the worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from facegallery.core.errors import (
    FaceGalleryError,
    InvalidInput,
    NotFound,
    Overloaded,
    Restarting,
    Unavailable,
)
from facegallery.core.telemetry import JOBS
from facegallery.jobs.queue import Delivery, EnrollmentQueue, Job, Lease
from facegallery.service.enrollment import EnrollResult, Fence, ImageInput

Enroll = Callable[[str, str, list[ImageInput], int | None, Fence], EnrollResult]
MAX_PAUSE_S = 5.0  # the longest wait between tries while Redis is unreachable
log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This worker's lease (or its job's entry) is another worker's now: stop writing."""


class Worker:
    """One consumer of the enrollment stream."""

    def __init__(self, queue: EnrollmentQueue, enroll: Enroll, name: str | None = None) -> None:
        self.queue = queue
        self.enroll = enroll
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.stop = threading.Event()

    def run(self, max_jobs: int | None = None) -> int:
        """Process jobs until ``stop`` is set (SIGTERM) or ``max_jobs`` are done; the job in
        hand is always finished or handed back first. Returns how many were processed. A
        Redis that cannot be reached is waited for (with a growing pause), not fatal; one
        that could lose acknowledged jobs is refused before the first (``ensure_durable``)."""
        done, pause, durable = 0, 0.0, False
        while not self.stop.is_set() and (max_jobs is None or done < max_jobs):
            try:
                if not durable:
                    self.queue.ensure_durable()
                    durable = True
                if self.run_once():
                    done += 1
                pause = 0.0
            except (Unavailable, Overloaded) as exc:  # Redis or a deployment away, or full
                pause = min(max(2 * pause, 0.1), MAX_PAUSE_S)
                log.warning("worker %s: %s; retrying in %.1f s", self.name, exc.message, pause)
                self.stop.wait(pause)
        return done

    def run_once(self) -> bool:
        """Handle at most one delivery; False when there was none to take."""
        delivery = self.queue.claim(self.name, self.queue.settings.block_ms)
        if delivery is None:
            return False
        self.handle(delivery)
        return True

    def handle(self, delivery: Delivery) -> None:
        queue = self.queue
        try:
            job = queue.get(delivery.job_id)
        except NotFound:
            job = None
        if job is None or job.finished:  # expired, or finished by a worker thought dead
            queue.acknowledge(delivery)
            return
        if delivery.deliveries > queue.settings.max_deliveries:
            self._give_up(
                delivery,
                f"gave up after {delivery.deliveries - 1} attempts; last error: "
                f"{job.error or 'the worker handling it stopped'}",
            )
            return
        with queue.user_lease(job.gallery, job.user_id) as lease:
            if lease is None:
                queue.requeue(delivery)
                return
            if self._lost_too_often(delivery, queue.get(job.job_id)):
                return
            queue.mark_running(job.job_id, self.name, delivery.deliveries)
            with self._heartbeat(delivery, lease) as fence:
                try:
                    images = queue.images(job)
                    result = self.enroll(job.gallery, job.user_id, images, job.face_index, fence)
                    fence()
                except Exception as exc:
                    self._failed(delivery, exc, fence)
                    return
                queue.complete(delivery, result)
            JOBS.labels("done").inc()

    def _lost_too_often(self, delivery: Delivery, job: Job) -> bool:
        """Under the user's lease, a job still ``running`` with no error was left by a
        worker that died running it (nobody else can be running it now): count that, and
        give up once ``max_worker_losses`` workers have."""
        if job.status != "running" or job.error:
            return False
        lost = self.queue.note_lost_worker(job.job_id)
        if lost < self.queue.settings.max_worker_losses:
            return False
        self._give_up(
            delivery,
            f"the workers running this job stopped {lost} time(s) without an answer "
            "(killed, e.g. out of memory, or their node lost); not retried again. "
            "Split the job or send smaller images",
        )
        return True

    def _failed(self, delivery: Delivery, exc: Exception, fence: Fence) -> None:
        """A refused input fails the job; a model deployment restarting or full hands it
        back without using up an attempt, and the worker pauses (re-raised to `run`: the
        service's state, not the job's, so a node lost for a minute dead-letters nothing),
        for at most ``queue.service_wait_s`` (a job that kills the replica it runs on would
        look the same, and must end); anything else is retried on a later delivery (then
        dead-lettered). A job no longer this worker's is left to its new owner, and this
        one writes nothing."""
        try:
            fence()
        except LeaseLost as lost:
            log.warning("job %s: %s; left to the worker that took it", delivery.job_id, lost)
            return
        if isinstance(exc, InvalidInput):
            self._give_up(delivery, exc.message)
            return
        if isinstance(exc, Restarting | Overloaded) and self.queue.waits_for_service(
            delivery.job_id
        ):
            self.queue.requeue(delivery)
            raise exc
        log.warning("job %s attempt %d: %s", delivery.job_id, delivery.deliveries, exc)
        self.queue.retry_later(delivery, exc)

    def _give_up(self, delivery: Delivery, reason: str) -> None:
        self.queue.fail(delivery, reason)
        JOBS.labels("failed").inc()

    @contextmanager
    def _heartbeat(self, delivery: Delivery, lease: Lease) -> Iterator[Fence]:
        """While the job runs, renew its lease and entry three times per claim interval.
        Yields the fence: called before every write, it raises `LeaseLost` once the lease
        or the entry is no longer this worker's (a stalled worker past ``claim_idle_ms``
        whose job another worker took), so it stops at its next write."""
        done, lost = threading.Event(), threading.Event()
        interval = self.queue.settings.claim_idle_ms / 3000

        def beat() -> None:
            while not done.wait(interval):
                try:
                    if not self.queue.heartbeat(self.name, delivery, lease):
                        lost.set()
                        return
                except FaceGalleryError as exc:
                    log.warning("heartbeat for job %s failed: %s", delivery.job_id, exc.message)

        def fence() -> None:
            if lost.is_set() or not self.queue.holds(lease):
                lost.set()
                raise LeaseLost(f"the lease on {lease.key} is no longer this worker's")

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield fence
        finally:
            done.set()
            thread.join()
