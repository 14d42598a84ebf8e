"""Safe decoding: every refusal path and limit, formats, grayscale, EXIF orientation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from facegallery.assets.samples import Samples
from facegallery.core.config import DecodeSettings
from facegallery.core.errors import ImageTooLarge, InvalidImage
from facegallery.vision.decode import decode_image
from tests.helpers import png_claiming

LIMITS = DecodeSettings()


def _pil_bytes(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :].repeat(height, axis=0)
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None].repeat(width, axis=1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2), "RGB")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_accepted_formats_decode_to_bgr(fmt: str) -> None:
    image = _gradient()
    decoded = decode_image(_pil_bytes(image, fmt, quality=95), LIMITS)
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    rgb = np.asarray(image).astype(int)
    assert np.abs(decoded[:, :, ::-1].astype(int) - rgb).mean() < 3  # BGR order, right pixels


def test_real_photo_decodes(samples: Samples) -> None:
    decoded = decode_image(samples.photo("astronaut.png").read_bytes(), LIMITS)
    assert decoded.shape == (512, 512, 3)


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = Image.fromarray(np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8))
    decoded = decode_image(_pil_bytes(gray, "PNG"), LIMITS)
    assert decoded.shape == (48, 64, 3)
    assert (decoded[:, :, 0] == decoded[:, :, 1]).all() and (
        decoded[:, :, 1] == decoded[:, :, 2]
    ).all()
    assert (decoded[:, :, 0] == np.asarray(gray)).all()


def test_sixteen_bit_grayscale_keeps_its_range() -> None:
    wide = Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))
    decoded = decode_image(_pil_bytes(wide, "PNG"), LIMITS)
    assert decoded.shape == (32, 32, 3)
    assert decoded.max() > 200 and decoded.min() == 0


def test_exif_orientation_is_applied() -> None:
    image = _gradient(64, 48)  # landscape; EXIF 6 says "rotate 90 degrees clockwise to view"
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(_pil_bytes(image, "JPEG", quality=95, exif=exif), LIMITS)
    assert decoded.shape == (64, 48, 3)
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270))[:, :, ::-1]
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 3


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillows_transpose(fmt: str, orientation: int) -> None:
    """JPEG takes OpenCV's decoder and the project's orientation table, PNG takes Pillow's
    exif_transpose: both must give Pillow's upright image for all eight orientations."""
    image = _gradient(64, 48)
    image.putpixel((3, 5), (255, 255, 255))  # an asymmetric mark: mirror images differ
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _pil_bytes(image, fmt, quality=100, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    decoded = decode_image(data, LIMITS)
    assert decoded.shape == expected.shape
    assert np.abs(decoded[:, :, ::-1].astype(int) - expected.astype(int)).mean() < 1.5


def test_empty_bytes_are_refused() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode_image(b"", LIMITS)


def test_non_image_bytes_are_refused() -> None:
    with pytest.raises(InvalidImage, match="not a supported image"):
        decode_image(b"#!/bin/sh\nrm -rf /\n" * 10, LIMITS)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_types_are_refused(fmt: str) -> None:
    with pytest.raises(InvalidImage, match=r"JPEG, PNG, WEBP accepted"):
        decode_image(_pil_bytes(_gradient(), fmt), LIMITS)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_are_refused(fmt: str) -> None:
    data = _pil_bytes(_gradient(256, 256), fmt, quality=95)
    with pytest.raises(InvalidImage):
        decode_image(data[: len(data) // 2], LIMITS)


def test_byte_limit_is_checked_first() -> None:
    data = _pil_bytes(_gradient(), "PNG")
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(data, DecodeSettings(max_bytes=len(data) - 1))
    assert decode_image(data, DecodeSettings(max_bytes=len(data))).shape == (48, 64, 3)


@pytest.mark.parametrize("side", [10_000, 60_000])
def test_pixel_limit_is_checked_from_the_header(side: int) -> None:
    bomb = png_claiming(side, side)
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="pixels"):
        decode_image(bomb, LIMITS)


def test_pixel_limit_boundary() -> None:
    data = _pil_bytes(_gradient(64, 48), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, DecodeSettings(max_pixels=64 * 48 - 1))
    assert decode_image(data, DecodeSettings(max_pixels=64 * 48)).shape == (48, 64, 3)


def test_too_small_images_are_refused() -> None:
    with pytest.raises(InvalidImage, match="at least 16 px"):
        decode_image(_pil_bytes(_gradient(64, 8), "PNG"), LIMITS)


def test_arrays_are_checked_too() -> None:
    bgr = np.zeros((32, 40, 3), np.uint8)
    assert decode_image(bgr, LIMITS).shape == (32, 40, 3)
    assert decode_image(np.zeros((32, 40), np.uint8), LIMITS).shape == (32, 40, 3)
    assert decode_image(np.zeros((32, 40, 4), np.uint8), LIMITS).shape == (32, 40, 3)
    with pytest.raises(InvalidImage, match="uint8"):
        decode_image(np.zeros((32, 40, 3), np.float32), LIMITS)
    with pytest.raises(InvalidImage, match="BGR"):
        decode_image(np.zeros((32, 40, 2), np.uint8), LIMITS)
    with pytest.raises(ImageTooLarge):
        decode_image(np.zeros((32, 40, 3), np.uint8), DecodeSettings(max_pixels=100))


def test_wrong_argument_type_is_refused() -> None:
    with pytest.raises(InvalidImage, match="expected image bytes"):
        decode_image("a path, not bytes", LIMITS)  # type: ignore[arg-type]
