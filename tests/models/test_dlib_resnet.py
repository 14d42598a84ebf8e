"""dlib's face recognition ResNet rebuilt in ONNX from its ``.dat``: the same descriptors as
dlib's own code (``dlib-bin``, a test dependency only) on real faces, batched, and a file that
is not the network refused with a message instead of a wrong model."""

from __future__ import annotations

from pathlib import Path

import cv2
import dlib  # a dev dependency (dlib-bin): the reference, never used at run time
import numpy as np
import onnxruntime as ort
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.models import dlib_landmarks
from facegallery.models.dlib_resnet import (
    DESCRIPTOR_DIM,
    INPUT_NAME,
    SOURCE,
    to_onnx,
)
from tests.helpers import read_bgr

PHOTOS = ("obama.jpg", "obama2.jpg", "biden.jpg", "grace_hopper.jpg", "astronaut.png", "group.jpg")


@pytest.fixture(scope="module")
def dat(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    dest = tmp_path_factory.mktemp("dlib") / "resnet.dat"
    return SOURCE.extract(settings.models.wheelhouse, dest)


@pytest.fixture(scope="module")
def chips_of(
    tmp_path_factory: pytest.TempPathFactory, settings: Settings, samples: Samples
) -> tuple[np.ndarray, list[str]]:
    """dlib's 150x150 chips (RGB, uint8) of the faces in the sample photos, and the photo
    each is from."""
    dest = tmp_path_factory.mktemp("dlib") / "shape5.dat"
    source = dlib_landmarks.SOURCE.extract(settings.models.wheelhouse, dest)
    predictor = dlib.shape_predictor(str(source))  # dlib's own landmarks: dlib's own chips
    detector = dlib.get_frontal_face_detector()
    found, owners = [], []
    for photo in PHOTOS:
        image = cv2.cvtColor(read_bgr(samples.photo(photo)), cv2.COLOR_BGR2RGB)
        for box in detector(image, 1):
            found.append(dlib.get_face_chip(image, predictor(image, box), 150, 0.25))
            owners.append(photo)
    assert set(owners) == set(PHOTOS)
    return np.stack(found), owners


def test_the_onnx_port_gives_dlibs_descriptors(
    dat: Path, chips_of: tuple[np.ndarray, list[str]]
) -> None:
    chips, owners = chips_of
    model = to_onnx(dat.read_bytes())
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = chips.transpose(0, 3, 1, 2).astype(np.float32)
    ours = session.run(None, {INPUT_NAME: batch})[0]
    assert ours.shape == (len(chips), DESCRIPTOR_DIM)
    recognizer = dlib.face_recognition_model_v1(str(dat))
    theirs = np.array([recognizer.compute_face_descriptor(chip) for chip in chips])
    cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(ours, axis=1)
    cosine /= np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.9999
    np.testing.assert_allclose(ours, theirs, atol=1e-4)  # raw descriptors, not unit length
    one = session.run(None, {INPUT_NAME: batch[:1]})[0]  # the batch axis changes nothing
    np.testing.assert_allclose(one[0], ours[0], atol=1e-5)
    # Different people are told apart, as dlib's own 0.6 distance would.
    obama, obama2, biden = (owners.index(p) for p in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    assert np.linalg.norm(ours[obama] - ours[biden]) > 0.6
    assert np.linalg.norm(ours[obama] - ours[obama2]) < 0.6


def test_a_file_that_is_not_the_network_is_refused(dat: Path) -> None:
    data = dat.read_bytes()
    with pytest.raises(FailedPrecondition, match="not dlib's face recognition network"):
        to_onnx(data[:1000])
    with pytest.raises(FailedPrecondition, match="bytes after the model"):
        to_onnx(data + b"\x00")
    with pytest.raises(FailedPrecondition, match="loss layer"):
        to_onnx(b"\x01\x01\x01\x03abc" + data[20:])
    first_relu = data.index(b"relu_")
    with pytest.raises(FailedPrecondition, match="layer 'relux'"):
        to_onnx(data[:first_relu] + b"relux" + data[first_relu + 5 :])
    negative = data.index(b"input_rgb_image_sized") - 1  # the input layer's name length
    with pytest.raises(FailedPrecondition, match="unexpected"):
        to_onnx(data[: negative - 1] + b"\x81" + data[negative:])
