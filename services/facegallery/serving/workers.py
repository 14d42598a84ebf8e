"""Enrollment workers as a deployment: each replica runs one `Worker` loop in a thread, over
the served pipeline, so enrollment shares the Detector and Embedder batches with live traffic.
Scaling workers is scaling this deployment. A replica that stops is handed back its job by
the queue (the entry stays pending and is claimed again after ``claim_idle_ms``)."""

from __future__ import annotations

import threading
from typing import Any

from ray.serve.handle import DeploymentHandle

from facegallery.core.config import Settings
from facegallery.jobs.queue import EnrollmentQueue
from facegallery.jobs.worker import Worker
from facegallery.serving.served_service import served_service


class EnrollmentWorkers:
    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        settings: dict[str, object],
        detector: DeploymentHandle[Any],
        embedder: DeploymentHandle[Any],
    ) -> None:
        config = Settings(**settings)  # type: ignore[arg-type]
        service = await served_service(config, detector, embedder)
        self.worker = Worker(EnrollmentQueue(config.queue, config.decode), service.enroll)
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
