"""dlib's 5-point face landmarks (``shape_predictor_5_face_landmarks.dat``, public domain like
dlib's recognition network, shipped in the same package), read from dlib's serialization and
run in NumPy (``vision/dlib_chip.py``), so that the dlib recognizer gets the chip it was
trained on (cut around dlib's own eye corners and nose base, not YuNet's eye centres and mouth
corners) without dlib.

The predictor is Kazemi and Sullivan's ensemble of regression trees ("One millisecond face
alignment with an ensemble of regression trees", CVPR 2014), as
``dlib/image_processing/shape_predictor.h`` runs it: a mean shape placed in the face's box
(the unit square mapped onto the box), then a cascade of forests. Each cascade reads the grey
level of a few hundred pixels, each placed at a fixed offset from one landmark of the current
shape (the offsets rotated and scaled by the similarity from the mean shape to the current
one), and each tree walks down by comparing two of those pixels against a threshold; the
leaves' shape updates of all the trees are added. The trees are complete, so a cascade's
forest is walked for all its trees at once.

File (``dlib_serial``): a version (1), the mean shape (a float column, x and y interleaved),
the forests (per cascade, per tree: its splits as (pixel 1, pixel 2, threshold) and its leaves'
float columns), then per cascade each pixel's anchor landmark and its (x, y) offset.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import BinaryIO

import numpy as np

from facegallery.assets.artifacts import PackagedFile
from facegallery.models.dlib_resnet import FACE_RECOGNITION_MODELS
from facegallery.models.dlib_serial import DlibReader

SOURCE = PackagedFile(
    FACE_RECOGNITION_MODELS,
    "face_recognition_models/models/shape_predictor_5_face_landmarks.dat",
    "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
)
LICENCE = (
    "public domain (dlib-models: trained on dlib's own 5-point dataset of public images, "
    "released into the public domain by Davis King); the face_recognition_models package: CC0 1.0"
)
POINTS = 5
_MOST = 1 << 16  # more cascades, trees, splits or pixels than any published predictor has


@dataclass(frozen=True)
class ShapePredictor:
    """The predictor's arrays, every cascade alike (C cascades of T complete trees of depth D
    over P pixels): ``mean_shape`` (POINTS, 2) in the box's unit square; ``pixel_1``,
    ``pixel_2``, ``threshold`` (C, T, 2^D - 1): each split; ``leaves`` (C, T, 2^D, POINTS, 2):
    each leaf's shape update; ``anchor`` (C, P) and ``offset`` (C, P, 2): each pixel's place."""

    mean_shape: np.ndarray
    pixel_1: np.ndarray
    pixel_2: np.ndarray
    threshold: np.ndarray
    leaves: np.ndarray
    anchor: np.ndarray
    offset: np.ndarray

    def save(self, out: BinaryIO) -> None:
        """Write the arrays as one ``.npz`` (what the model store keeps and serving loads),
        byte for byte the same every time (no clock in the archive): the file's hash is part
        of the model id, which names galleries."""
        with zipfile.ZipFile(out, "w") as archive:
            for field in fields(self):
                member = zipfile.ZipInfo(f"{field.name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                member.create_system = 3  # as on Linux, on any platform
                with archive.open(member, "w") as npy:
                    np.lib.format.write_array(npy, getattr(self, field.name), allow_pickle=False)

    @classmethod
    def load(cls, path: Path) -> ShapePredictor:
        with np.load(path, allow_pickle=False) as arrays:
            return cls(**{f.name: arrays[f.name] for f in fields(cls)})


def read_shape_predictor(data: bytes) -> ShapePredictor:
    """The predictor in dlib's ``.dat`` bytes; refuses any file that is not a 5-point
    predictor of complete trees, every cascade alike."""
    reader = DlibReader(data, "dlib's 5-point shape predictor")
    if (version := reader.integer()) != 1:
        raise reader.error(f"version {version}")
    mean_shape = reader.column()
    if mean_shape.shape != (2 * POINTS,):
        raise reader.error(f"a mean shape of {len(mean_shape)} values")
    forests = [
        [_tree(reader) for _ in range(reader.count(_MOST))] for _ in range(reader.count(_MOST))
    ]
    anchors = [
        [reader.count(POINTS - 1) for _ in range(reader.count(_MOST))]
        for _ in range(reader.count(_MOST))
    ]
    offsets = [
        [(reader.real(), reader.real()) for _ in range(reader.count(_MOST))]
        for _ in range(reader.count(_MOST))
    ]
    reader.end()
    if not forests or not forests[0] or not len(anchors) == len(forests) == len(offsets):
        raise reader.error("cascades without forests, anchors or offsets")
    try:
        splits = np.array([[s for s, _ in forest] for forest in forests], np.float64)
        leaves = np.array([[v for _, v in forest] for forest in forests], np.float32)
        anchor = np.array(anchors, np.int64)
        offset = np.array(offsets, np.float32)
    except ValueError:  # ragged: cascades or trees that differ
        raise reader.error("cascades or trees of different sizes") from None
    pixels = anchor.shape[1]
    if offset.shape != (*anchor.shape, 2) or splits[..., :2].max(initial=0) >= pixels:
        raise reader.error(f"a split over a pixel that is not among the {pixels}")
    return ShapePredictor(
        mean_shape=mean_shape.reshape(POINTS, 2),
        pixel_1=splits[..., 0].astype(np.int64),
        pixel_2=splits[..., 1].astype(np.int64),
        threshold=splits[..., 2].astype(np.float32),
        leaves=leaves.reshape(*leaves.shape[:3], POINTS, 2),
        anchor=anchor,
        offset=offset,
    )


def _tree(reader: DlibReader) -> tuple[list[tuple[int, int, float]], list[np.ndarray]]:
    splits = [
        (reader.count(_MOST), reader.count(_MOST), reader.real())
        for _ in range(reader.count(_MOST))
    ]
    leaves = [reader.column() for _ in range(reader.count(_MOST))]
    complete = len(leaves) == len(splits) + 1 and len(leaves) & (len(leaves) - 1) == 0
    if not complete or any(leaf.shape != (2 * POINTS,) for leaf in leaves):
        raise reader.error(f"a tree of {len(splits)} splits and {len(leaves)} leaves")
    if not all(math.isfinite(threshold) for _, _, threshold in splits):
        raise reader.error("a split threshold that is not a finite number")
    return splits, leaves
