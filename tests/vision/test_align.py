"""Alignment geometry: the Umeyama fit and the 112x112 crop, against known landmark sets."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.vision.align import ARCFACE_TEMPLATE, CROP_SIZE, align_face, similarity_transform
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import read_bgr

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from opencv_reference import OpenCVReference


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    placed: np.ndarray = points @ matrix[:, :2].T + matrix[:, 2]
    return placed


def test_recovers_a_known_similarity() -> None:
    angle, scale, shift = math.radians(23.0), 2.7, np.array([140.0, -35.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    src = (ARCFACE_TEMPLATE - 56) @ (scale * rotation).T + shift  # template moved into a photo
    matrix = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(_apply(matrix, src), ARCFACE_TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(matrix[:, :2]), 1 / scale**2, rtol=1e-9)


def test_least_squares_with_noise_has_no_shear() -> None:
    rng = np.random.default_rng(3)
    src = ARCFACE_TEMPLATE * 1.5 + rng.normal(0, 2.0, ARCFACE_TEMPLATE.shape)
    matrix = similarity_transform(src, ARCFACE_TEMPLATE)
    a, b = matrix[0, :2], matrix[1, :2]
    assert abs(a @ b) < 1e-9 and abs(np.linalg.norm(a) - np.linalg.norm(b)) < 1e-9
    residual = np.linalg.norm(_apply(matrix, src) - ARCFACE_TEMPLATE, axis=1).mean()
    assert residual < 3.0


def test_template_landmarks_give_the_identity_crop() -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, (CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    crop = align_face(image, ARCFACE_TEMPLATE.astype(np.float32))
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.abs(crop.astype(int) - image.astype(int)).max() <= 1


def test_crop_matches_opencv_align_crop(
    pipeline: FacePipeline, settings: Settings, samples: Samples
) -> None:
    """Same landmarks in, the same crop out as OpenCV's FaceRecognizerSF.alignCrop."""
    reference = OpenCVReference(settings, score_threshold=0.6)
    for name in ("astronaut.png", "grace_hopper.jpg", "group.jpg"):
        image = read_bgr(samples.photo(name))
        for face in reference.detect(image):
            landmarks = face[4:14].reshape(5, 2)
            ours = align_face(image, landmarks).astype(int)
            theirs = reference.recognizer.alignCrop(image, face).astype(int)
            assert np.abs(ours - theirs).mean() < 0.5


def test_detected_landmarks_land_on_the_template(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("grace_hopper.jpg"))
    face = pipeline.detector.detect([image])[0][0]
    matrix = similarity_transform(face.landmarks, ARCFACE_TEMPLATE)
    placed = _apply(matrix, face.landmarks.astype(np.float64))
    assert np.linalg.norm(placed - ARCFACE_TEMPLATE, axis=1).max() < 6.0
