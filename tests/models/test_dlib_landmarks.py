"""dlib's 5-point shape predictor read from its ``.dat`` and run in NumPy, and dlib's chip cut
without dlib: the same landmarks as dlib's own code (``dlib-bin``, a test dependency only) on
real faces, and the same chip pixels, whether dlib samples the image directly or first shrinks
it with its pyramid."""

from __future__ import annotations

import io
from dataclasses import fields
from pathlib import Path

import cv2
import dlib  # a dev dependency (dlib-bin): the reference, never used at run time
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import dlib_landmarks
from facegallery.models.dlib_landmarks import ShapePredictor, read_shape_predictor
from facegallery.vision.dlib_chip import CHIP_SIZE, dlib_grey, extract_chip, locate_landmarks
from tests.helpers import read_bgr

PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.png", "group.jpg")
Found = tuple[np.ndarray, tuple[int, int, int, int], dlib.full_object_detection]


@pytest.fixture(scope="module")
def dat(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    dest = tmp_path_factory.mktemp("dlib") / "shape5.dat"
    return dlib_landmarks.SOURCE.extract(settings.models.wheelhouse, dest)


@pytest.fixture(scope="module")
def predictor(dat: Path) -> ShapePredictor:
    return read_shape_predictor(dat.read_bytes())


def _faces(dat: Path, images: list[np.ndarray]) -> list[Found]:
    """Every face dlib's own detector finds in the RGB ``images``: (image, box, dlib's shape)."""
    reference = dlib.shape_predictor(str(dat))
    detector = dlib.get_frontal_face_detector()
    found = []
    for image in images:
        for box in detector(image, 1):
            corners = (box.left(), box.top(), box.right(), box.bottom())
            found.append((image, corners, reference(image, box)))
    return found


@pytest.fixture(scope="module")
def faces(dat: Path, samples: Samples) -> list[Found]:
    photos = [cv2.cvtColor(read_bgr(samples.photo(p)), cv2.COLOR_BGR2RGB) for p in PHOTOS]
    # A face several times the chip's size, which dlib shrinks with its pyramid first, and
    # one cut by the image's top edge (its chip reaches past it).
    photos.append(cv2.resize(photos[0], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC))
    photos.append(np.ascontiguousarray(photos[0][195:]))
    found = _faces(dat, photos)
    assert len(found) >= len(photos)
    return found


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], np.float64)


def test_the_port_finds_dlibs_landmarks(predictor: ShapePredictor, faces: list[Found]) -> None:
    for image, box, shape in faces:
        ours = locate_landmarks(predictor, dlib_grey(image), box)
        np.testing.assert_array_equal(ours, _points(shape))
    # A box off the face finds no face's points: the prediction reads the pixels.
    image, (left, top, right, bottom), shape = faces[0]
    moved = locate_landmarks(predictor, dlib_grey(image[::-1].copy()), (left, top, right, bottom))
    assert np.abs(moved - _points(shape)).max() > 3


def test_the_chip_is_dlibs_pixel_for_pixel(faces: list[Found]) -> None:
    scales, black_rows = [], []
    for image, _, shape in faces:
        theirs = dlib.get_face_chip(image, shape, CHIP_SIZE, 0.25)
        ours = extract_chip(image, _points(shape))
        assert ours.shape == (CHIP_SIZE, CHIP_SIZE, 3) and ours.dtype == np.uint8
        # The pixels agree but for float rounding (a value one apart, rarely).
        assert np.mean(ours != theirs) < 0.001
        assert np.abs(ours.astype(int) - theirs).max() <= 1
        scales.append(np.hypot(*(_points(shape)[0] - _points(shape)[2])) / CHIP_SIZE)
        black_rows.append(int((ours.sum(axis=(1, 2)) == 0).sum()))
    assert max(black_rows) > 20  # past the image's edge, where dlib leaves the chip black
    # Faces sampled directly, after one pyramid step and after two (eye-corner span per
    # chip side: dlib's template spans 0.49 of the chip).
    assert min(scales) < 0.49 * 2 < 0.49 * 4 < max(scales)
    assert any(0.49 * 2 < s < 0.49 * 4 for s in scales)


def test_the_stored_arrays_are_the_predictor(
    predictor: ShapePredictor, dat: Path, faces: list[Found], tmp_path: Path
) -> None:
    with (tmp_path / "shape5.npz").open("wb") as out:
        predictor.save(out)
    again = ShapePredictor.load(tmp_path / "shape5.npz")
    for field in fields(ShapePredictor):
        ours, theirs = getattr(again, field.name), getattr(predictor, field.name)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), field.name
    # The same bytes from another reading (no clock, no platform in the archive): the file's
    # hash names the model, and with it the fused pack's galleries.
    other = io.BytesIO()
    read_shape_predictor(dat.read_bytes()).save(other)
    assert other.getvalue() == (tmp_path / "shape5.npz").read_bytes()
    image, box, _ = faces[0]
    grey = dlib_grey(image)
    np.testing.assert_array_equal(
        locate_landmarks(again, grey, box), locate_landmarks(predictor, grey, box)
    )


def test_a_file_that_is_not_the_predictor_is_refused(dat: Path, settings: Settings) -> None:
    data = dat.read_bytes()
    with pytest.raises(FailedPrecondition, match="not dlib's 5-point shape predictor"):
        read_shape_predictor(data[:5000])
    with pytest.raises(FailedPrecondition, match="bytes after the model"):
        read_shape_predictor(data + b"\x00")
    with pytest.raises(FailedPrecondition, match="version 2"):
        read_shape_predictor(b"\x01\x02" + data[2:])
    with pytest.raises(FailedPrecondition, match="a column of 10x2 at byte 6"):
        read_shape_predictor(data[:4] + b"\x81\x02" + data[6:])  # the mean shape's width
    with pytest.raises(FailedPrecondition, match="float32's range"):
        read_shape_predictor(data[:2] + b"\x81\x0c" + data[4:])  # reads on into the trees
