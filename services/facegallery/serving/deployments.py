"""The Detector and Embedder deployments (served under those names): the pipeline's two
halves, batched across every request that reaches the replica (`@serve.batch`), sized from
``serving.detector`` / ``serving.embedder``. Each replica loads its models once."""

from __future__ import annotations

import asyncio

import numpy as np
from ray import serve

from facegallery.core.config import DeploymentSettings, Settings
from facegallery.core.telemetry import BATCH_SIZE
from facegallery.models import ModelStore
from facegallery.vision.pipeline import DetectedImage, FaceFinder, build_detector, build_embedder

DetectCall = tuple[bytes | np.ndarray, bool]  # image, largest_only


def _faces_in(crops: list[np.ndarray]) -> int:
    return sum(len(c) for c in crops)


def _set_batching(method: object, deployment: DeploymentSettings) -> None:
    method.set_max_batch_size(deployment.max_batch_size)  # type: ignore[attr-defined]
    method.set_batch_wait_timeout_s(deployment.batch_wait_timeout_s)  # type: ignore[attr-defined]


class DetectorDeployment:
    """Image bytes -> decode -> detect -> quality -> align, a batch of images at a time."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = Settings(**settings)  # type: ignore[arg-type]
        detector_model, _ = ModelStore(self.settings.models).load_configured()
        self.finder = FaceFinder(build_detector(detector_model, self.settings), self.settings)
        _set_batching(self.detect, self.settings.serving.detector)

    def model_id(self) -> str:
        return self.finder.detector_id

    @serve.batch
    async def detect(self, calls: list[DetectCall]) -> list[DetectedImage]:
        BATCH_SIZE.labels("detector").observe(len(calls))
        return await asyncio.to_thread(self._detect, calls)

    def _detect(self, calls: list[DetectCall]) -> list[DetectedImage]:
        answers: dict[int, DetectedImage] = {}
        for largest_only in (False, True):
            chosen = [i for i, (_, flag) in enumerate(calls) if flag == largest_only]
            found = self.finder.detect_images([calls[i][0] for i in chosen], largest_only)
            answers.update(zip(chosen, found, strict=True))
        return [answers[i] for i in range(len(calls))]


class EmbedderDeployment:
    """Aligned crops -> unit embeddings; the batch is counted in faces, not requests."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = Settings(**settings)  # type: ignore[arg-type]
        _, recognizer_model = ModelStore(self.settings.models).load_configured()
        self.embedder = build_embedder(recognizer_model, self.settings)
        _set_batching(self.embed, self.settings.serving.embedder)

    def model_id(self) -> str:
        return self.embedder.model_id

    def dimension(self) -> int:
        return self.embedder.dimension

    @serve.batch(batch_size_fn=_faces_in)
    async def embed(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        faces = _faces_in(crops)
        BATCH_SIZE.labels("embedder").observe(faces)
        vectors = await asyncio.to_thread(self.embedder.embed, np.concatenate(crops))
        bounds = np.cumsum([len(c) for c in crops])[:-1]
        return list(np.split(vectors, bounds))
