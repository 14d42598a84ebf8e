"""Two recognizers as one embedding: SFace on the aligned 112x112 crop and dlib's network on
dlib's own 150x150 chip (the "accurate" pack).

Each network's unit vector is scaled by 1/sqrt(2) and the two are concatenated: the result is
a unit vector, and the cosine of two of them is the mean of the two networks' cosines (score
fusion with equal weights, fixed, not fitted), so the gallery stores and searches one vector
per template like any other model's, under a model id of its own. A face reaches it as a
sheet (``vision.sheet``), of which each network takes its own part.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from facegallery.core.config import EmbedSettings
from facegallery.vision.embed import Embedder, own_input
from facegallery.vision.sheet import SHEET_SHAPE


def fused_id(first: str, second: str, landmarks: str, settings: EmbedSettings) -> str:
    """The fused embedding's model id, from its parts' (each names its exact file): a
    process that only reads the gallery computes it without loading a runtime."""
    digest = hashlib.sha256(f"{first}|{second}|{landmarks}".encode()).hexdigest()[:12]
    return f"fused-sface-dlib-{digest}" + ("+flip" if settings.flip_tta else "")


class FusedEmbedder:
    """``embed(sheets) -> (N, D1 + D2)`` unit vectors: ``first`` on the sheets' crops,
    ``second`` on their chips, each with the configured flip averaging."""

    def __init__(self, first: Embedder, second: Embedder, model_id: str) -> None:
        self.first, self.second = first, second
        self.model_id = model_id  # ``fused_id``
        self.input_shape = SHEET_SHAPE

    @property
    def dimension(self) -> int:
        return self.first.dimension + self.second.dimension

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``crops``: (N, 150, 262, 3) BGR uint8 sheets. Returns (N, D1 + D2) float32, each
        row of unit length."""
        sheets = own_input(crops, SHEET_SHAPE)
        parts = (self.first.embed(sheets), self.second.embed(sheets))
        fused: np.ndarray = (np.hstack(parts) / math.sqrt(2)).astype(np.float32)
        return fused
