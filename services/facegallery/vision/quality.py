"""The quality gate: is this face good enough to enroll or to search with, and if not, why.

Measured on the detection and on the aligned 112x112 crop (so every measure is on the same
scale whatever the photo's size): face size, detector score, sharpness (variance of the
Laplacian, Pech-Pacheco et al. 2000), head pose from the 5 landmarks, and brightness. Each
failed check yields a reason a person understands; the score in [0, 1] ranks faces that pass
(used to keep a user's best templates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from facegallery.core.config import QualitySettings
from facegallery.vision.align import ARCFACE_TEMPLATE
from facegallery.vision.detect import Detection

# The face itself inside the aligned crop (rows, cols): the black fill that alignment adds
# around faces near the image border must not count as edges or darkness.
FACE_REGION = (slice(28, 104), slice(20, 92))

# Nose tip depth in front of the eyes, over half the eye distance, and over the eye-to-mouth
# height, of an average adult face: they turn landmark asymmetry into approximate angles.
NOSE_DEPTH_OVER_HALF_EYE_DISTANCE = 1.0
NOSE_DEPTH_OVER_EYE_MOUTH_HEIGHT = 0.45

_EYE_MID = ARCFACE_TEMPLATE[:2].mean(axis=0)
_MOUTH_MID = ARCFACE_TEMPLATE[3:].mean(axis=0)
# Where the nose tip sits between the eye line (0) and the mouth line (1) on a frontal face.
FRONTAL_NOSE_HEIGHT = float((ARCFACE_TEMPLATE[2, 1] - _EYE_MID[1]) / (_MOUTH_MID[1] - _EYE_MID[1]))


@dataclass(frozen=True)
class Pose:
    """Approximate head pose in degrees, from 5 landmarks: yaw (+ towards image right),
    pitch (+ looking down), roll (+ clockwise in the image)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Quality:
    """The gate's verdict on one face. ``reasons`` is empty exactly when ``passed``."""

    score: float
    reasons: list[str] = field(default_factory=list)
    face_px: float = 0.0
    detector_score: float = 0.0
    sharpness: float = 0.0
    brightness: float = 0.0
    pose: Pose = Pose(0.0, 0.0, 0.0)

    @property
    def passed(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        """One phrase for people: ``ok`` or ``rejected: blurry, too_dark``."""
        return "ok" if self.passed else "rejected: " + ", ".join(self.reasons)

    def to_dict(self) -> dict[str, object]:
        return {
            "score": self.score,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "face_px": round(self.face_px, 1),
            "sharpness": round(self.sharpness, 1),
            "brightness": round(self.brightness, 1),
            "yaw": round(self.pose.yaw, 1),
            "pitch": round(self.pose.pitch, 1),
            "roll": round(self.pose.roll, 1),
        }


def estimate_pose(landmarks: np.ndarray) -> Pose:
    """Yaw, pitch and roll from eye, eye, nose, mouth, mouth (image coordinates, (5, 2)).

    Roll is the eye line's angle. After undoing it, yaw comes from the nose tip's horizontal
    offset from the eye midpoint, r = (d/e) tan(yaw), and pitch from the nose tip's height
    between eye and mouth lines against a frontal face's, both with the mean-face ratios above.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    eye_vector = points[1] - points[0]
    roll = math.atan2(eye_vector[1], eye_vector[0])
    cos, sin = math.cos(-roll), math.sin(-roll)
    upright = (points - points[:2].mean(axis=0)) @ np.array([[cos, sin], [-sin, cos]])
    half_eye_distance = max(float(np.linalg.norm(eye_vector)) / 2.0, 1e-6)
    nose, mouth_height = upright[2], float(upright[3:, 1].mean())
    yaw = math.atan(nose[0] / half_eye_distance / NOSE_DEPTH_OVER_HALF_EYE_DISTANCE)
    height = nose[1] / mouth_height if mouth_height > 1e-6 else FRONTAL_NOSE_HEIGHT
    pitch = math.atan((height - FRONTAL_NOSE_HEIGHT) / NOSE_DEPTH_OVER_EYE_MOUTH_HEIGHT)
    return Pose(math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


def assess_quality(detection: Detection, crop: np.ndarray, limits: QualitySettings) -> Quality:
    """Measure one face and gate it. ``crop``: its aligned (112, 112, 3) BGR uint8 crop."""
    face = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[FACE_REGION]
    face_px = float(min(detection.box[2] - detection.box[0], detection.box[3] - detection.box[1]))
    sharpness = float(cv2.Laplacian(face, cv2.CV_64F).var())
    brightness = float(face.mean())
    pose = estimate_pose(detection.landmarks)

    reasons = []
    if face_px < limits.min_face_px:
        reasons.append("too_small")
    if detection.score < limits.min_detector_score:
        reasons.append("low_confidence")
    if sharpness < limits.min_sharpness:
        reasons.append("blurry")
    if abs(pose.yaw) > limits.max_yaw_deg or abs(pose.pitch) > limits.max_pitch_deg:
        reasons.append("extreme_pose")
    if brightness < limits.min_brightness:
        reasons.append("too_dark")
    if brightness > limits.max_brightness:
        reasons.append("too_bright")

    pose_load = max(abs(pose.yaw) / limits.max_yaw_deg, abs(pose.pitch) / limits.max_pitch_deg)
    light_margin = min(brightness - limits.min_brightness, limits.max_brightness - brightness)
    score = (
        detection.score
        * _ramp(face_px / (2.0 * limits.min_face_px))
        * _ramp(sharpness / (2.0 * limits.min_sharpness))
        * _ramp(1.0 - pose_load / 2.0)
        * _ramp(0.5 + light_margin / 80.0)
    )
    return Quality(
        score=round(score, 4),
        reasons=reasons,
        face_px=face_px,
        detector_score=detection.score,
        sharpness=sharpness,
        brightness=brightness,
        pose=pose,
    )


def _ramp(value: float) -> float:
    return min(1.0, max(0.0, value))
