"""What a client accepts as an image: bytes, a path, or a (name, bytes) pair."""

from __future__ import annotations

from pathlib import Path

ImageArg = bytes | Path | tuple[str, bytes]


def named(image: ImageArg, index: int = 0) -> tuple[str, bytes]:
    """(name, encoded bytes); a path is read and named after its file."""
    if isinstance(image, Path):
        return image.name, image.read_bytes()
    if isinstance(image, tuple):
        return image
    return f"image-{index}", image
