"""The Detector and Embedder deployments (served under those names): the pipeline's two
halves, batched across every request that reaches the replica (``serving.batching``: live
calls only, interactive before bulk), sized from ``serving.detector`` / ``serving.embedder``.
Each replica loads its models once and runs a first batch before it reports ready, so the
first callers do not pay for a cold runtime."""

from __future__ import annotations

import asyncio

import numpy as np

from facegallery.core.config import Settings
from facegallery.core.deadline import Priority
from facegallery.models import ModelStore
from facegallery.serving.batching import DeadlineBatcher
from facegallery.vision.embed import own_input
from facegallery.vision.pipeline import (
    DetectedImage,
    FaceFinder,
    build_detector,
    build_embedder,
    sheet_cutting,
)

DetectCall = tuple[bytes | np.ndarray, bool, bool]  # image, largest_only, sheets
WARM_UP_FRAME = (480, 640, 3)  # a camera frame's shape: the first batch every replica runs


class DetectorDeployment:
    """Image bytes -> decode -> detect -> quality -> align, a batch of images at a time
    (`DeadlineBatcher`: live calls only, interactive first)."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = Settings(**settings)  # type: ignore[arg-type]
        detector_model, _ = ModelStore(self.settings.models).load_configured()
        self.finder = FaceFinder(
            build_detector(detector_model, self.settings),
            self.settings,
            *sheet_cutting(self.settings),
        )
        deployment = self.settings.serving.detector
        self.batcher: DeadlineBatcher[DetectCall, DetectedImage] = DeadlineBatcher(
            "detector",
            lambda calls: asyncio.to_thread(self._detect, calls),
            deployment.max_batch_size,
            deployment.batch_wait_timeout_s,
            self.settings.serving.bulk_share,
        )
        self._detect([(np.zeros(WARM_UP_FRAME, np.uint8), False, False)])  # ready means warm

    def model_id(self) -> str:
        return self.finder.detector_id

    async def detect(
        self, call: DetectCall, deadline: float | None, priority: Priority
    ) -> DetectedImage:
        return await self.batcher(call, deadline, priority)

    def _detect(self, calls: list[DetectCall]) -> list[DetectedImage]:
        answers: dict[int, DetectedImage] = {}
        # A caller of the version before sheets sends (image, largest_only): no sheets.
        options_of = [(call[1], len(call) > 2 and call[2]) for call in calls]
        for options in sorted(set(options_of)):
            chosen = [i for i, o in enumerate(options_of) if o == options]
            found = self.finder.detect_images([calls[i][0] for i in chosen], *options)
            answers.update(zip(chosen, found, strict=True))
        return [answers[i] for i in range(len(calls))]


class EmbedderDeployment:
    """Aligned crops or sheets (a fused pack's faces; enrolled faces whose crops are kept)
    -> unit embeddings; the batch is counted in faces, not requests."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = Settings(**settings)  # type: ignore[arg-type]
        self.embedder = build_embedder(self.settings)
        deployment = self.settings.serving.embedder
        self.batcher: DeadlineBatcher[np.ndarray, np.ndarray] = DeadlineBatcher(
            "embedder",
            self._embed,
            deployment.max_batch_size,
            deployment.batch_wait_timeout_s,
            self.settings.serving.bulk_share,
            len,  # a call weighs its faces
        )
        for size in (1, deployment.max_batch_size):  # ready means warm, at both ends
            self.embedder.embed(np.zeros((size, *self.embedder.input_shape), np.uint8))

    def model_id(self) -> str:
        return self.embedder.model_id

    def input_shape(self) -> tuple[int, int, int]:
        """One face's own input for this embedder (a sheet also serves: ``vision.sheet``)."""
        return self.embedder.input_shape

    def dimension(self) -> int:
        return self.embedder.dimension

    async def embed(
        self, crops: np.ndarray, deadline: float | None, priority: Priority
    ) -> np.ndarray:
        return await self.batcher(crops, deadline, priority)

    async def _embed(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        # Calls of one batch may bring aligned crops and sheets (enrollments that keep their
        # crops): each becomes this embedder's own input before they are joined.
        own = [own_input(c, self.embedder.input_shape) for c in crops]
        vectors = await asyncio.to_thread(self.embedder.embed, np.concatenate(own))
        bounds = np.cumsum([len(c) for c in crops])[:-1]
        return list(np.split(vectors, bounds))
