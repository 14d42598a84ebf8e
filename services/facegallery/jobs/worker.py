"""The enrollment worker: claim a job, enroll under the user's lease, record, acknowledge.

Exactly-once *effect*, not exactly-once delivery: a worker that dies leaves its entry pending
and another claims it after ``claim_idle_ms``. Re-running a job changes nothing already
written, because ``FaceService.enroll`` writes deterministic template ids (a re-run rewrites
the same rows, and the cap sees them as the user's own), and the job is marked finished at
most once (``EnrollmentQueue.complete``). A per-user lease keeps two jobs for one user from
racing the per-user cap or the duplicate-identity check; it lapses with the worker (it lasts
``claim_idle_ms``), and a heartbeat renews it, and the job's entry, while a long job runs.

Failures: an input the service refuses outright (``InvalidInput``) fails the job at once;
anything else (the gallery unavailable, a crash inside a stage) is retried on a later
delivery, and after ``max_deliveries`` the job is dead-lettered with the last error.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from facegallery.errors import FaceGalleryError, InvalidInput, NotFound
from facegallery.jobs.queue import Delivery, EnrollmentQueue, Lease
from facegallery.metrics import JOBS
from facegallery.service import EnrollResult, ImageInput

Enroll = Callable[[str, str, list[ImageInput], int | None], EnrollResult]
log = logging.getLogger(__name__)


class Worker:
    """One consumer of the enrollment stream."""

    def __init__(self, queue: EnrollmentQueue, enroll: Enroll, name: str | None = None) -> None:
        self.queue = queue
        self.enroll = enroll
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.stop = threading.Event()

    def run(self, max_jobs: int | None = None) -> int:
        """Process jobs until ``stop`` is set (SIGTERM) or ``max_jobs`` are done; the job in
        hand is always finished or handed back first. Returns how many were processed."""
        done = 0
        while not self.stop.is_set() and (max_jobs is None or done < max_jobs):
            if self.run_once():
                done += 1
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
            queue.fail(
                delivery,
                f"gave up after {delivery.deliveries - 1} attempts; last error: "
                f"{job.error or 'the worker handling it stopped'}",
            )
            JOBS.labels("failed").inc()
            return
        with queue.user_lease(job.gallery, job.user_id) as lease:
            if lease is None:
                queue.requeue(delivery)
                return
            queue.mark_running(job.job_id, self.name, delivery.deliveries)
            with self._heartbeat(delivery, lease):
                try:
                    images = queue.images(job)
                    result = self.enroll(job.gallery, job.user_id, images, job.face_index)
                except InvalidInput as exc:
                    queue.fail(delivery, exc.message)
                    JOBS.labels("failed").inc()
                    return
                except Exception as exc:  # retried on a later delivery, then dead-lettered
                    log.warning("job %s attempt %d: %s", job.job_id, delivery.deliveries, exc)
                    queue.retry_later(delivery, exc)
                    return
            queue.complete(delivery, result)
            JOBS.labels("done").inc()

    @contextmanager
    def _heartbeat(self, delivery: Delivery, lease: Lease) -> Iterator[None]:
        """While the job runs, renew its lease and entry three times per claim interval."""
        done = threading.Event()
        interval = self.queue.settings.claim_idle_ms / 3000

        def beat() -> None:
            while not done.wait(interval):
                try:
                    self.queue.heartbeat(self.name, delivery, lease)
                except FaceGalleryError as exc:
                    log.warning("heartbeat for job %s failed: %s", delivery.job_id, exc.message)

        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
