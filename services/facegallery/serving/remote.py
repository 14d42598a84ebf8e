"""The pipeline's two halves run by the Detector and Embedder deployments: a `FaceAnalyzer`
for the gateway and the enrollment workers. Each image is its own Detector call and each
request's faces one Embedder call, so the deployments batch them with every other caller's.
Every call carries the current call's deadline and priority (``core.deadline``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayTaskError,
    WorkerCrashedError,
)
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle

from facegallery.core.deadline import (
    check_deadline,
    current_deadline,
    current_priority,
    remaining_s,
)
from facegallery.core.errors import FaceGalleryError, Overloaded, Restarting, Unavailable
from facegallery.vision.pipeline import AlignedFace, DetectedImage, Face, attach_embeddings

POLL_S = 0.1  # how often a waiting call looks at its caller (and wakes at its deadline)


class ServedPipeline:
    """`FaceAnalyzer` over deployment handles (call it from a thread, not an event loop)."""

    def __init__(
        self,
        detector: DeploymentHandle[Any],
        embedder: DeploymentHandle[Any],
        model_ids: tuple[str, str],
        embedder_batch: int,
        retry_after_s: int,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self._detector_id, self._model_id = model_ids
        self.embedder_batch = embedder_batch
        self.retry_after_s = retry_after_s

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def detector_id(self) -> str:
        return self._detector_id

    def detect_images(
        self, images: Sequence[bytes | np.ndarray], largest_only: bool = False, sheets: bool = False
    ) -> list[DetectedImage]:
        check_deadline("detector")
        deadline, priority = current_deadline(), current_priority()
        calls = [
            self.detector.detect.remote((data, largest_only, sheets), deadline, priority)
            for data in images
        ]
        return self._results(calls, "detector")

    def embed(
        self, faces: list[list[AlignedFace]], embed_rejected: bool = True
    ) -> list[list[Face]]:
        return attach_embeddings(faces, embed_rejected, self.model_id, self._embed_crops)

    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """One call per ``embedder_batch`` faces (Serve refuses a call larger than the batch),
        all in flight at once."""
        if len(crops) == 0:
            return np.zeros((0, 0), np.float32)
        check_deadline("embedder")
        step, deadline, priority = self.embedder_batch, current_deadline(), current_priority()
        calls = [
            self.embedder.embed.remote(crops[i : i + step], deadline, priority)
            for i in range(0, len(crops), step)
        ]
        return np.concatenate(self._results(calls, "embedder"))

    def _results(self, calls: list[Any], stage: str) -> list[Any]:
        """Every call's answer, in order; when one fails (or the deadline passes, or the
        caller leaves), the others still in flight are cancelled: none of them runs for a
        request that has already failed."""
        answers: list[Any] = []
        try:
            for call in calls:
                answers.append(self._result(call, stage))
        except BaseException:
            for pending in calls[len(answers) + 1 :]:
                pending.cancel()
            raise
        return answers

    def _result(self, call: Any, stage: str) -> Any:
        """The call's answer, waited for no longer than the deadline and only while the
        caller is still there (the call is cancelled otherwise, which takes it out of its
        batch's queue); a deployment that is full or down is Overloaded / Unavailable with a
        retry hint (Serve's own exceptions never reach the caller)."""
        try:
            while True:
                left = remaining_s()
                wait = POLL_S if left is None else max(0.001, min(POLL_S, left))
                try:
                    return call.result(timeout_s=wait)
                except TimeoutError:
                    try:
                        check_deadline(stage)
                    except FaceGalleryError:
                        call.cancel()
                        raise
        except BackPressureError as exc:
            raise Overloaded(
                f"the service is at capacity; retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            ) from exc
        except (
            DeploymentUnavailableError,
            RayActorError,
            NodeDiedError,
            ObjectLostError,
            WorkerCrashedError,
        ) as exc:  # a replica, its node or the batch's result lost with it
            raise Restarting(
                f"a model deployment is restarting; retry in {self.retry_after_s} s",
                retry_after_s=self.retry_after_s,
            ) from exc
        except RayTaskError as exc:
            if isinstance(exc.cause, FaceGalleryError):  # the replica dropped it (a deadline)
                raise exc.cause from None
            raise Unavailable(
                f"a model deployment failed on this request ({type(exc.cause).__name__})",
                retry_after_s=self.retry_after_s,
            ) from exc
