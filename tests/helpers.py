"""Small helpers shared by the tests."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def read_bgr(path: Path) -> np.ndarray:
    """A sample photo as BGR uint8 (ORL's PGM files too)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    return image


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed PNG header that declares a huge canvas: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
