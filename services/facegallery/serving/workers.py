"""Enrollment workers as a deployment: each replica runs one `Worker` loop in a thread, over
the served pipeline, so enrollment shares the Detector and Embedder batches with live traffic.
Scaling workers is scaling this deployment. A replica that stops is handed back its job by
the queue (the entry stays pending and is claimed again after ``claim_idle_ms``)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ray.serve.handle import DeploymentHandle

from facegallery.core.config import Settings
from facegallery.core.deadline import call_scope
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.service.enrollment import EnrollResult
from facegallery.serving.served_service import served_service


def bulk(enroll: Callable[..., EnrollResult]) -> Callable[..., EnrollResult]:
    """Enrollment as bulk work: it takes the model batches' bounded bulk share
    (``serving.batching``) and has no deadline (its job is retried, not abandoned)."""

    def enroll_as_bulk(*args: Any, **kwargs: Any) -> EnrollResult:
        with call_scope(None, "bulk"):
            return enroll(*args, **kwargs)

    return enroll_as_bulk


class EnrollmentWorkers:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        settings: dict[str, object],
        detector: DeploymentHandle[Any],
        embedder: DeploymentHandle[Any],
    ) -> None:
        config = Settings(**settings)  # type: ignore[arg-type]
        service = await served_service(config, detector, embedder)
        self.worker = Worker(EnrollmentQueue(config.queue, config.decode), bulk(service.enroll))
        self.thread = threading.Thread(target=self.worker.run, name="enrollment", daemon=True)
        self.thread.start()

    def check_health(self) -> None:
        """Serve restarts a replica whose loop has died."""
        if not self.thread.is_alive():
            raise RuntimeError("the enrollment loop stopped")

    def __del__(self) -> None:
        """Graceful shutdown: the job in hand is finished or handed back first."""
        if hasattr(self, "worker"):  # the constructor got that far
            self.worker.stop.set()
            self.thread.join(timeout=30)
