"""Alignment: the 5-point similarity transform onto the 112x112 ArcFace template.

Recognizers are trained on crops made exactly this way, so the crop a probe gets must match:
a least-squares similarity (rotation, uniform scale, translation; no shear) fitted with
Umeyama's closed form ("Least-squares estimation of transformation parameters between two
point patterns", TPAMI 1991), then one warp with bilinear interpolation.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112

# Eye, eye, nose tip, mouth corner, mouth corner (image-left first) in a 112x112 crop: the
# template of InsightFace's ArcFace training data, also used by SFace.
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity matrix M minimising sum ||M [src_i, 1] - dst_i||^2 (Umeyama).

    ``src``, ``dst``: (N, 2) corresponding points, N >= 2.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    reflect = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        reflect[1, 1] = -1.0
    rotation = u @ reflect @ vt
    src_var = (src_c**2).sum() / len(src)
    scale = float(np.trace(np.diag(s) @ reflect) / src_var) if src_var > 0 else 1.0
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 crop of ``image`` (H, W, 3) whose 5 ``landmarks`` (5, 2) land on the
    template. Pixels outside the image are black, as in the recognizers' training crops."""
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)
