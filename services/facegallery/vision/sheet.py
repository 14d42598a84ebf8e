"""A face's **sheet**: its aligned 112x112 crop (top-left) and dlib's 150x150 chip (to its
right) in one 150x262 image, the rest black.

The sheet is what the Detector makes where a second view of the face is needed: for every
face with the accurate pack, whose second network sees dlib's chip (``vision.fused``), and for
the faces enrolled where crops are kept (``gallery.keep_crops``), so that a kept gallery can
move to any shipped recognizer (``facegallery reembed``). One array per face keeps every path
the same (the Detector makes it, the Embedder batches it, the crop store keeps it), and each
network takes its own part exactly (``as_input``).
"""

from __future__ import annotations

import numpy as np

from facegallery.vision.align import CROP_SIZE
from facegallery.vision.dlib_chip import CHIP_SIZE

SHEET_SHAPE = (CHIP_SIZE, CROP_SIZE + CHIP_SIZE, 3)
ALIGNED_SHAPE = (CROP_SIZE, CROP_SIZE, 3)
CHIP_SHAPE = (CHIP_SIZE, CHIP_SIZE, 3)


def make_sheet(crop: np.ndarray, chip: np.ndarray) -> np.ndarray:
    """One face's sheet: its (112, 112, 3) aligned crop and (150, 150, 3) dlib chip."""
    sheet = np.zeros(SHEET_SHAPE, np.uint8)
    sheet[:CROP_SIZE, :CROP_SIZE] = crop
    sheet[:, CROP_SIZE:] = chip
    return sheet


def aligned_part(sheets: np.ndarray) -> np.ndarray:
    """The (N, 112, 112, 3) aligned crops of (N, 150, 262, 3) sheets."""
    return np.ascontiguousarray(sheets[:, :CROP_SIZE, :CROP_SIZE])


def chip_part(sheets: np.ndarray) -> np.ndarray:
    """The (N, 150, 150, 3) dlib chips of (N, 150, 262, 3) sheets."""
    return np.ascontiguousarray(sheets[:, :, CROP_SIZE:])


def as_input(faces: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """``faces`` (N, H, W, 3) as a network of input ``shape`` sees them: as they are, or its
    part of sheets; None where they do not hold it (aligned crops alone lack dlib's chip)."""
    if faces.shape[1:] == shape:
        return faces
    if faces.shape[1:] == SHEET_SHAPE:
        if shape == ALIGNED_SHAPE:
            return aligned_part(faces)
        if shape == CHIP_SHAPE:
            return chip_part(faces)
    return None
