"""The served `FaceService`: the gallery and thresholds in this process, the pipeline in the
Detector and Embedder deployments. The gateway and the enrollment workers both build it."""

from __future__ import annotations

from typing import Any

from ray.serve.handle import DeploymentHandle

from facegallery.core.config import Settings
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.service.face_service import FaceService
from facegallery.serving.remote import ServedPipeline


async def served_service(
    settings: Settings, detector: DeploymentHandle[Any], embedder: DeploymentHandle[Any]
) -> FaceService:
    """Built in a replica's (async) constructor: it asks the model deployments which models
    they run, once."""
    model_ids = (await detector.model_id.remote(), await embedder.model_id.remote())
    dimension: int = await embedder.dimension.remote()
    serving = settings.serving
    pipeline = ServedPipeline(
        detector, embedder, model_ids, serving.embedder.max_batch_size, serving.retry_after_s
    )
    gallery = Gallery(settings.gallery, pipeline.model_id, dimension)
    return FaceService(pipeline, gallery, Thresholds(settings.matching), settings)
