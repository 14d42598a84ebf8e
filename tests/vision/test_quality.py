"""The quality gate's reasons, on real photos degraded in known ways."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import QualitySettings
from facegallery.vision.align import ARCFACE_TEMPLATE
from facegallery.vision.pipeline import FacePipeline
from facegallery.vision.quality import Quality, estimate_pose
from tests.helpers import read_bgr


def _quality(pipeline: FacePipeline, image: np.ndarray) -> Quality:
    faces = pipeline.detect_and_align([image], largest_only=True)[0]
    assert len(faces) == 1
    return faces[0].quality


@pytest.mark.parametrize("name", ["astronaut.png", "grace_hopper.jpg", "obama.jpg"])
def test_good_photos_pass(pipeline: FacePipeline, samples: Samples, name: str) -> None:
    quality = _quality(pipeline, read_bgr(samples.photo(name)))
    assert quality.passed, quality.reasons
    assert 0.5 < quality.score <= 1.0


def test_blur_is_reported(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("grace_hopper.jpg"))
    blurred = cv2.GaussianBlur(image, (0, 0), 6)
    sharp, soft = _quality(pipeline, image), _quality(pipeline, blurred)
    assert "blurry" in soft.reasons and "blurry" not in sharp.reasons
    assert soft.score < sharp.score


def test_darkness_is_reported(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("grace_hopper.jpg"))
    dark = (image.astype(np.float32) * 0.18).astype(np.uint8)
    assert "too_dark" in _quality(pipeline, dark).reasons


def test_overexposure_is_reported(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("grace_hopper.jpg"))
    bright = np.clip(image.astype(np.float32) * 1.6 + 90, 0, 255).astype(np.uint8)
    assert "too_bright" in _quality(pipeline, bright).reasons


def test_small_faces_are_reported(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("group.jpg"))
    faces = pipeline.detect_and_align([cv2.resize(image, None, fx=0.25, fy=0.25)])[0]
    assert faces, "the shrunk group photo should still show faces"
    assert all("too_small" in f.quality.reasons for f in faces)
    assert all(f.quality.face_px < 32 for f in faces)


def test_low_confidence_is_reported(pipeline: FacePipeline, samples: Samples) -> None:
    image = read_bgr(samples.photo("astronaut.png"))
    strict = pipeline.settings.quality
    pipeline.settings.quality = strict.model_copy(update={"min_detector_score": 0.999})
    try:
        assert "low_confidence" in _quality(pipeline, image).reasons
    finally:
        pipeline.settings.quality = strict


def test_turned_heads_are_reported(pipeline: FacePipeline, samples: Samples) -> None:
    faces = pipeline.detect_and_align([read_bgr(samples.photo("group.jpg"))])[0]
    turned = [f for f in faces if "extreme_pose" in f.quality.reasons]
    assert len(turned) == 1  # the man looking sharply to his left
    assert abs(turned[0].quality.pose.yaw) > 45
    frontal = [f for f in faces if f.quality.passed]
    assert all(abs(f.quality.pose.yaw) < 35 for f in frontal)


def test_pose_of_the_template_is_frontal_and_roll_is_measured() -> None:
    pose = estimate_pose(ARCFACE_TEMPLATE)
    assert abs(pose.yaw) < 1 and abs(pose.pitch) < 1 and abs(pose.roll) < 1
    angle = np.radians(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    rolled = estimate_pose(ARCFACE_TEMPLATE @ rotation.T)
    assert rolled.roll - pose.roll == pytest.approx(30, abs=1e-6)
    assert abs(rolled.yaw) < 1 and abs(rolled.pitch) < 1


def test_yaw_grows_as_the_nose_moves_towards_an_eye() -> None:
    yaws = []
    for shift in (0, 5, 10, 20):  # 17.6 px is half the template's eye distance
        points = ARCFACE_TEMPLATE.copy()
        points[2, 0] += shift
        yaws.append(estimate_pose(points).yaw)
    assert yaws == sorted(yaws) and yaws[-1] > QualitySettings().max_yaw_deg
