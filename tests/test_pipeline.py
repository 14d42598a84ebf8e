"""FacePipeline end to end on bytes: what a caller gets back."""

from __future__ import annotations

import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.errors import InvalidImage
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import read_bgr


def test_analyze_bytes(pipeline: FacePipeline, samples: Samples) -> None:
    faces = pipeline.analyze(samples.photo("group.jpg").read_bytes())
    assert len(faces) == 6
    for face in faces:
        assert face.model_id == pipeline.model_id and face.model_id.startswith("sface-2021dec-")
        assert face.embedding is not None and face.embedding.shape == (128,)
        view = face.to_dict()
        assert set(view) >= {"box", "landmarks", "detector_score", "quality", "model_id"}
        assert len(view["landmarks"]) == 5  # type: ignore[arg-type]


def test_bad_bytes_raise_a_clear_error(pipeline: FacePipeline) -> None:
    with pytest.raises(InvalidImage):
        pipeline.analyze(b"not an image")


def test_rejected_faces_can_skip_embedding(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("group.jpg"))
    faces = pipeline.analyze_batch([image], embed_rejected=False)[0]
    rejected = [f for f in faces if not f.quality.passed]
    assert rejected and all(f.embedding is None for f in rejected)
    assert all(f.embedding is not None for f in faces if f.quality.passed)


def test_batch_of_images_matches_single_images(pipeline: FacePipeline, samples: Samples) -> None:
    images = [read_bgr(samples.photo(n)) for n in ("obama.jpg", "astronaut.png", "group.jpg")]
    together = pipeline.analyze_batch(images)
    for image, faces in zip(images, together, strict=True):
        alone = pipeline.analyze_batch([image])[0]
        assert [len(faces)] == [len(alone)]
        for a, b in zip(alone, faces, strict=True):
            assert a.embedding is not None and b.embedding is not None
            assert float(np.dot(a.embedding, b.embedding)) > 0.999
