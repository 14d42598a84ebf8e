"""Embedding: aligned crops in, L2-normalised identity vectors out, in batches.

Cosine similarity of unit vectors is what the recognizers were trained for (NormFace, CosFace,
ArcFace all normalise features before the margin softmax). With ``flip_tta`` each crop and its
mirror image are embedded and their sum is normalised: the mirrored face is the same person,
so averaging cancels part of the noise that pose and lighting asymmetry add.
"""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Protocol

import numpy as np

from facegallery.core.config import ChipRecognizerFamily, EmbedSettings, RecognizerFamily
from facegallery.core.telemetry import timed
from facegallery.runtime import InferenceRuntime
from facegallery.vision.sheet import as_input

# (mean, std) applied to RGB 0-255 pixels before the network, per recognizer family.
# SFace and dlib's network normalise inside their graphs; ArcFace models expect
# (x - 127.5) / 127.5.
NORMALISATION: dict[str, tuple[float, float]] = {
    "sface": (0.0, 1.0),
    "arcface": (127.5, 127.5),
    "dlib": (0.0, 1.0),
}
# The square side of the face image each family sees: the aligned crop, or dlib's chip.
INPUT_SIDE: dict[str, int] = {"sface": 112, "arcface": 112, "dlib": 150}


def own_input(faces: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``faces`` as an embedder of input ``shape`` sees them (``vision.sheet.as_input``), or
    a clear error where they do not hold it."""
    own = as_input(faces, shape)
    if own is None:
        raise ValueError(f"faces of shape {faces.shape[1:]} do not hold a {shape} input")
    return own


class FaceEmbedder(Protocol):
    """What embeds faces: one recognizer (`Embedder`) or a fused pair
    (``vision.fused.FusedEmbedder``). ``input_shape``: one face's own (H, W, 3) uint8 input;
    ``embed`` also takes sheets (``vision.sheet``), of which it uses its part."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def input_shape(self) -> tuple[int, int, int]: ...

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


def embedding_id(model_id: str, settings: EmbedSettings) -> str:
    """The id of the embeddings a prepared recognizer makes with these settings: what
    galleries and thresholds are keyed by (a process that only reads the gallery needs it
    without loading the model)."""
    return f"{model_id}+flip" if settings.flip_tta else model_id


class Embedder:
    """A recognizer model: ``embed(crops) -> (N, D)`` unit vectors tagged with ``model_id``.

    Flip averaging changes the vectors (slightly, but thresholds move with it), so it is part
    of the id: ``sface-2021dec-728d3b367af3+flip``. Galleries and thresholds keyed by the id
    never mix the two."""

    def __init__(
        self,
        runtime: InferenceRuntime,
        family: RecognizerFamily | ChipRecognizerFamily,
        settings: EmbedSettings,
        model_id: str,
    ) -> None:
        self.runtime = runtime
        self.mean, self.std = NORMALISATION[family]
        side = INPUT_SIDE[family]
        self.input_shape = (side, side, 3)
        self.settings = settings
        self.model_id = embedding_id(model_id, settings)

    def on_runtime(self, runtime: InferenceRuntime) -> Embedder:
        """The same recognizer (normalisation, flip averaging, id) run by ``runtime``: the
        precision gate compares one model on two runtimes."""
        twin = copy.copy(self)
        twin.runtime = runtime
        return twin

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """``crops``: (N, *input_shape) BGR uint8 aligned faces, or sheets (``vision.sheet``),
        of which this network takes its own part. Returns (N, D) float32, each row of unit
        length."""
        crops = own_input(crops, self.input_shape)
        if len(crops) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        # A flipped copy doubles each runtime batch; keep it within the configured size.
        step = max(1, self.settings.batch_size // (2 if self.settings.flip_tta else 1))
        with timed("embed"):
            chunks = [self._embed_chunk(crops[i : i + step]) for i in range(0, len(crops), step)]
        return np.concatenate(chunks)

    @cached_property
    def dimension(self) -> int:
        probe = np.zeros((1, *self.input_shape), dtype=np.uint8)
        return int(self._raw(probe).shape[1])

    def _embed_chunk(self, crops: np.ndarray) -> np.ndarray:
        if self.settings.flip_tta:
            both = self._raw(np.concatenate([crops, crops[:, :, ::-1]]))
            features = both[: len(crops)] + both[len(crops) :]
        else:
            features = self._raw(crops)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        unit: np.ndarray = (features / np.maximum(norms, 1e-12)).astype(np.float32)
        return unit

    def _raw(self, crops: np.ndarray) -> np.ndarray:
        rgb = crops[:, :, :, ::-1].transpose(0, 3, 1, 2).astype(np.float32)
        batch = np.ascontiguousarray((rgb - self.mean) / self.std)
        features: np.ndarray = self.runtime.run(batch)[0]
        return features.reshape(len(crops), -1)
