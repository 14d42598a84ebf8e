"""Safe image decoding: bytes (or arrays) in, an upright 8-bit BGR image out, or a clear refusal.

Untrusted bytes are checked in the cheapest order: byte size, then the container format and the
declared width/height from the header alone (Pillow opens lazily), and only then are pixels
decoded. A decompression bomb is refused before it allocates anything. EXIF orientation is
applied so that faces are upright for the detector, which is not rotation invariant.

JPEG, what cameras send, is decoded by OpenCV once the header has passed: ``cv2.imdecode``
writes BGR directly and ran 3x faster than Pillow's decode and conversion at 1080p, 4x at 4K
(``benchmarks/bench_pipeline.py``, ``camera.decode_ms``). The orientation still comes from the
EXIF that Pillow read with the header, applied by the same table as ``ImageOps.exif_transpose``.
A JPEG that OpenCV cannot decode (truncated, corrupt) goes to Pillow, whose error names the
fault.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facegallery.core.config import DecodeSettings
from facegallery.core.errors import ImageTooLarge, InvalidImage

_ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> the numpy operations that make the image upright (exif_transpose's table:
# 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90
# counter-clockwise).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def decode_image(data: bytes | np.ndarray, limits: DecodeSettings) -> np.ndarray:
    """Decode untrusted image bytes, or check a caller's array, into BGR uint8 (H, W, 3)."""
    if isinstance(data, np.ndarray):
        return _from_array(data, limits)
    with _opened(data, limits) as image:  # decoding errors surface through it too
        if image.format == "JPEG":
            fast = _decode_jpeg(data, image.getexif().get(_ORIENTATION, 1))
            if fast is not None:
                return fast
        image.load()
        return _to_bgr(ImageOps.exif_transpose(image))


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header declares, read without decoding a pixel."""

    format: str
    width: int
    height: int


def check_image_header(data: object, limits: DecodeSettings) -> ImageHeader:
    """The checks ``decode_image`` makes before decoding (bytes, format, declared size):
    cheap enough to run on every image of a queued job when it is submitted."""
    with _opened(data, limits) as image:
        return ImageHeader(str(image.format), image.width, image.height)


@contextmanager
def _opened(data: object, limits: DecodeSettings) -> Iterator[Image.Image]:
    """The image opened lazily (header only) after the byte, format and size checks."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImage(f"expected image bytes or a numpy array, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns on odd EXIF and on large images; our own limits decide instead.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=list(limits.formats)) as image:
                _check_size(image.width, image.height, limits)
                yield image
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"the image declares more than {limits.max_pixels:,} pixels, the limit"
        ) from exc
    except UnidentifiedImageError as exc:
        allowed = ", ".join(limits.formats)
        raise InvalidImage(f"the bytes are not a supported image ({allowed} accepted)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage(f"the image is corrupt or truncated: {exc}") from exc


def _check_size(width: int, height: int, limits: DecodeSettings) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,} pixels"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(
            f"the image is {width}x{height}; both sides must be at least {limits.min_side} px"
        )


def _decode_jpeg(data: bytes | bytearray | memoryview, orientation: object) -> np.ndarray | None:
    """OpenCV's decode, made upright; None where OpenCV refuses the bytes."""
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # orientation: ours, below
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None:
        return None
    upright = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return bgr if upright is None else np.ascontiguousarray(upright(bgr))


def _to_bgr(image: Image.Image) -> np.ndarray:
    if image.mode in _WIDE_MODES:  # 16-bit grayscale: keep the top 8 bits
        wide = np.asarray(image, dtype=np.float32)
        gray = np.clip(wide / 257.0, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _from_array(array: np.ndarray, limits: DecodeSettings) -> np.ndarray:
    if array.dtype != np.uint8:
        raise InvalidImage(f"image arrays must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InvalidImage(
            f"image arrays must be (H, W), (H, W, 3) BGR or (H, W, 4) BGRA; got {array.shape}"
        )
    _check_size(array.shape[1], array.shape[0], limits)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])
