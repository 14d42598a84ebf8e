"""The one protocol every inference backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ShapeProfile:
    """The input shapes a backend must accept, (C, H, W) without the batch axis.

    ONNX Runtime accepts any shape; TensorRT builds its engine for this range.
    """

    min_chw: tuple[int, int, int]
    opt_chw: tuple[int, int, int]
    max_chw: tuple[int, int, int]
    max_batch: int


class InferenceRuntime(Protocol):
    """Runs one model on a batch: ``run(batch) -> outputs``, in the model's output order."""

    output_names: list[str]

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """``batch``: float32 (N, C, H, W). Returns one array per model output, batch first."""
        ...
