"""Detection on real photos with the real models: 0, 1 or many faces, tight crops, batching,
caps and coordinate mapping, for YuNet (default pack) and SCRFD (second pack)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import DetectSettings
from facegallery.vision.detect import Detection, Detector, largest
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import read_bgr


def _with(detector: Detector, **changes: object) -> DetectSettings:
    """Swap the detector's settings for a copy with ``changes``; returns the old ones."""
    old = detector.settings
    detector.settings = old.model_copy(update=changes)
    return old


def _tight_crop(image: np.ndarray, face: Detection) -> np.ndarray:
    x1, y1, x2, y2 = (round(float(v)) for v in face.box)
    return np.ascontiguousarray(image[max(0, y1) : y2, max(0, x1) : x2])


def _assert_plausible(face: Detection, image: np.ndarray) -> None:
    x1, y1, x2, y2 = face.box
    assert x2 > x1 and y2 > y1
    # landmarks inside the box: eyes above the nose, nose above the mouth corners
    lm = face.landmarks
    assert (lm[:, 0] > x1 - 5).all() and (lm[:, 0] < x2 + 5).all()
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])
    assert x1 + 5 >= 0 and x2 - 5 <= image.shape[1]


@pytest.fixture(params=["default", "insightface"])
def any_pipeline(request: pytest.FixtureRequest) -> FacePipeline:
    name = "pipeline" if request.param == "default" else "insightface_pipeline"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg", "obama.jpg"])
def test_one_face(any_pipeline: FacePipeline, samples: Samples, name: str) -> None:
    image = read_bgr(samples.photo(name))
    faces = any_pipeline.detector.detect([image])[0]
    assert len(faces) == 1
    _assert_plausible(faces[0], image)
    assert faces[0].score > 0.7


def test_no_face_in_a_faceless_image(any_pipeline: FacePipeline) -> None:
    rng = np.random.default_rng(1)
    noise = cv2.GaussianBlur(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), (9, 9), 3)
    assert any_pipeline.detector.detect([noise, np.zeros((240, 320, 3), np.uint8)]) == [[], []]


def test_many_faces_in_a_group_photo(any_pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("group.jpg"))
    faces = any_pipeline.detector.detect([image])[0]
    assert len(faces) == 6
    for face in faces:
        _assert_plausible(face, image)
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)
    boxes = np.array([f.box for f in faces])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.eye(6) * 1e9
    assert distances.min() > 50  # six different people, no duplicate boxes left by NMS


def test_max_faces_cap(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("group.jpg"))
    old = _with(pipeline.detector, max_faces=2)
    try:
        faces = pipeline.detector.detect([image])[0]
    finally:
        pipeline.detector.settings = old
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score


def test_score_threshold(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("group.jpg"))
    best = pipeline.detector.detect([image])[0][0].score
    old = _with(pipeline.detector, score_threshold=min(1.0, best + 1e-3))
    try:
        assert pipeline.detector.detect([image])[0] == []
    finally:
        pipeline.detector.settings = old


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg", "obama.jpg"])
def test_tight_crops_are_found(any_pipeline: FacePipeline, samples: Samples, name: str) -> None:
    image = read_bgr(samples.photo(name))
    crop = _tight_crop(image, any_pipeline.detector.detect([image])[0][0])
    faces = any_pipeline.detector.detect([crop])[0]
    assert len(faces) == 1
    _assert_plausible(faces[0], crop)


def test_an_aligned_crop_is_found(any_pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("tom_hanks_112.png"))
    assert len(any_pipeline.detector.detect([image])[0]) == 1


def test_padding_is_what_finds_tight_crops_for_scrfd(
    insightface_pipeline: FacePipeline, samples: Samples
) -> None:
    """SCRFD letterboxes a tight crop to a face larger than its anchors; the padded second
    look is what finds it, in the original crop's coordinates."""
    detector = insightface_pipeline.detector
    image = read_bgr(samples.photo("obama.jpg"))
    reference = detector.detect([image])[0][0]
    offset = np.round(reference.box[:2])
    crop = _tight_crop(image, reference)
    old = _with(detector, tight_crop_padding=0.0)
    try:
        assert detector.detect([crop])[0] == []
    finally:
        detector.settings = old
    found = detector.detect([crop])[0]
    assert len(found) == 1
    np.testing.assert_allclose(found[0].landmarks + offset, reference.landmarks, atol=12)


def test_a_large_tight_crop_is_found_on_the_capped_canvas(
    insightface_pipeline: FacePipeline, samples: Samples
) -> None:
    """A face filling a large frame (a tight crop, 3x upscaled) is found by the padded second
    search on its canvas downscaled to ``tight_crop_max_side``, in the frame's own pixels."""
    detector = insightface_pipeline.detector
    image = read_bgr(samples.photo("obama.jpg"))
    reference = detector.detect([image])[0][0]
    offset = np.round(reference.box[:2])
    big = cv2.resize(_tight_crop(image, reference), None, fx=3, fy=3)
    assert max(big.shape[:2]) * 2 > detector.settings.tight_crop_max_side  # the cap applies
    found = detector.detect([big])[0]
    assert len(found) == 1
    np.testing.assert_allclose(found[0].landmarks, (reference.landmarks - offset) * 3, atol=24)


def test_a_faceless_frame_costs_one_capped_second_pass(
    pipeline: FacePipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most camera frames hold no face: the second search runs on a canvas no larger than
    ``tight_crop_max_side``, not on the padded frame (four times its pixels)."""
    detector = pipeline.detector
    shapes: list[tuple[int, ...]] = []
    run = detector.runtime.run

    def recording(batch: np.ndarray) -> list[np.ndarray]:
        shapes.append(batch.shape)
        return run(batch)

    monkeypatch.setattr(detector.runtime, "run", recording)
    frame = np.full((960, 1280, 3), 90, np.uint8)
    assert detector.detect([frame]) == [[]]
    cap = detector.settings.tight_crop_max_side
    assert shapes == [(1, 3, 960, 1280), (1, 3, cap * 3 // 4, cap)]


def test_batch_equals_one_by_one(any_pipeline: FacePipeline, samples: Samples) -> None:
    images = [read_bgr(samples.photo(n)) for n in ("astronaut.png", "group.jpg", "obama.jpg")]
    together = any_pipeline.detector.detect(images)
    for image, batched in zip(images, together, strict=True):
        alone = any_pipeline.detector.detect([image])[0]
        assert len(alone) == len(batched)
        for a, b in zip(alone, batched, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)
            assert a.score == pytest.approx(b.score, abs=1e-3)


def test_large_images_map_back_to_original_pixels(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("astronaut.png"))
    face = pipeline.detector.detect([image])[0][0]
    big = cv2.resize(image, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 2048 > max_side
    assert max(big.shape[:2]) > pipeline.settings.detect.max_side
    found = pipeline.detector.detect([big])[0]
    assert found[0].score > 0.9  # the blown-up photo also draws weak false alarms; best is her
    np.testing.assert_allclose(found[0].box / 4, face.box, atol=3)
    np.testing.assert_allclose(found[0].landmarks / 4, face.landmarks, atol=5)  # 5% of the face


def test_grayscale_photos_work(any_pipeline: FacePipeline, samples: Samples) -> None:
    orl = read_bgr(samples.orl / "s1" / "1.pgm")
    assert (orl[:, :, 0] == orl[:, :, 2]).all()  # a grayscale studio photo
    assert len(any_pipeline.detector.detect([orl])[0]) == 1


def test_largest_prefers_confident_faces() -> None:
    lm = np.zeros((5, 2), np.float32)
    big_doubt = Detection(np.array([0, 0, 100, 100], np.float32), lm, 0.55)
    small_sure = Detection(np.array([0, 0, 50, 50], np.float32), lm, 0.95)
    assert largest([big_doubt, small_sure], confident_score=0.7) is small_sure
    assert largest([big_doubt, small_sure]) is big_doubt
    assert largest([big_doubt], confident_score=0.7) is big_doubt
    assert largest([]) is None
