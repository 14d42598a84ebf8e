"""Embeddings from the real recognizers: unit length, batch-invariant, and the same person
closer than different people."""

from __future__ import annotations

import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.vision.embed import Embedder
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import read_bgr


def _embedding(pipeline: FacePipeline, image: np.ndarray) -> np.ndarray:
    faces = pipeline.analyze_batch([image], largest_only=True)[0]
    assert len(faces) == 1 and faces[0].embedding is not None
    return faces[0].embedding


@pytest.fixture(params=["default", "insightface"])
def any_pipeline(request: pytest.FixtureRequest) -> FacePipeline:
    name = "pipeline" if request.param == "default" else "insightface_pipeline"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


def test_unit_length_and_dimension(any_pipeline: FacePipeline, samples: Samples) -> None:
    vector = _embedding(any_pipeline, read_bgr(samples.photo("astronaut.png")))
    assert vector.dtype == np.float32
    assert vector.shape == (any_pipeline.embedder.dimension,)
    assert vector.shape[0] in (128, 512)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_same_person_is_closer_than_different_people(
    any_pipeline: FacePipeline, samples: Samples
) -> None:
    obama = [
        _embedding(any_pipeline, read_bgr(samples.photo(n)))
        for n in ("obama.jpg", "obama2.jpg", "obama_partial_face.jpg")
    ]
    others = [
        _embedding(any_pipeline, read_bgr(samples.photo(n)))
        for n in ("biden.jpg", "astronaut.png", "grace_hopper.jpg")
    ]
    genuine = [float(a @ b) for i, a in enumerate(obama) for b in obama[i + 1 :]]
    impostor = [float(a @ b) for a in obama for b in others]
    assert min(genuine) > max(impostor) + 0.1, (genuine, impostor)


def test_orl_people_separate(any_pipeline: FacePipeline, samples: Samples) -> None:
    people = {
        p: [read_bgr(samples.orl / p / f"{k}.pgm") for k in (1, 2, 3)]
        for p in ("s1", "s2", "s3", "s4")
    }
    vectors = {p: [_embedding(any_pipeline, im) for im in ims] for p, ims in people.items()}
    for person, own in vectors.items():
        genuine = min(float(a @ b) for i, a in enumerate(own) for b in own[i + 1 :])
        impostor = max(
            float(a @ b)
            for other, vs in vectors.items()
            if other != person
            for a in own
            for b in vs
        )
        assert genuine > impostor, person


def test_batch_equals_one_by_one(pipeline: FacePipeline, samples: Samples) -> None:
    crops = np.stack(
        [
            face.crop
            for name in ("group.jpg", "astronaut.png")
            for face in pipeline.detect_and_align([read_bgr(samples.photo(name))])[0]
        ]
    )
    together = pipeline.embedder.embed(crops)
    alone = np.concatenate([pipeline.embedder.embed(crops[i : i + 1]) for i in range(len(crops))])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert pipeline.embedder.embed(crops[:0]).shape == (0, pipeline.embedder.dimension)


def test_flip_averaging_is_the_normalised_sum(pipeline: FacePipeline, samples: Samples) -> None:
    crop = pipeline.detect_and_align([read_bgr(samples.photo("grace_hopper.jpg"))])[0][0].crop
    embedder = pipeline.embedder
    assert isinstance(embedder, Embedder)
    old = embedder.settings
    try:
        embedder.settings = old.model_copy(update={"flip_tta": False})
        plain = embedder.embed(crop[None])[0]
        mirrored = embedder.embed(crop[None, :, ::-1])[0]
        embedder.settings = old.model_copy(update={"flip_tta": True})
        both = embedder.embed(crop[None])[0]
    finally:
        embedder.settings = old
    assert float(plain @ mirrored) < 0.999  # the mirror image is a different input...
    assert float(plain @ mirrored) > 0.7  # ...of the same person
    # The sum of raw features is not the sum of unit vectors, but it lies between them.
    assert float(both @ plain) > float(plain @ mirrored)
    assert float(both @ mirrored) > float(plain @ mirrored)
