"""Synthetic templates that look like real ones: a Gaussian model fitted to SFace embeddings.

Isotropic random vectors are HNSW's worst case and nothing like faces: real embeddings of
different people share a mean direction and a few dominant axes, and one person's photos
spread around their centre by a measured amount. The model (the generative model behind
LDA / PLDA) is fitted to real embeddings of a folder-per-identity set:

    centre_u   ~ N(mu, S_between)       (mean and covariance of the identities' means)
    template   = unit(centre_u + e),  e ~ N(0, S_within)   (pooled within-person spread)

A mated probe is another draw around the same centre (an unseen photo of the person); a
non-mated probe comes from a new centre (a stranger). The fit is cached per model id and set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facegallery.core.limits import IMAGE_SUFFIXES
from facegallery.evaluation.runner import embed_images, largest_face_embedder
from facegallery.vision.pipeline import FacePipeline


@dataclass(frozen=True)
class EmbeddingModel:
    """``mean`` (D,), ``between`` and ``within`` (D, D) covariances, and their sources."""

    mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    identities: int
    images: int

    def centres(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.multivariate_normal(self.mean, self.between, size=n, method="cholesky")

    def around(self, centres: np.ndarray, per: int, rng: np.random.Generator) -> np.ndarray:
        """``per`` unit templates around each centre: (len(centres) * per, D), grouped."""
        noise = rng.multivariate_normal(
            np.zeros(len(self.mean)), self.within, size=len(centres) * per, method="cholesky"
        )
        vectors = np.repeat(centres, per, axis=0) + noise
        unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(
            np.float32
        )
        return unit


def fit(embeddings: dict[str, list[np.ndarray]]) -> EmbeddingModel:
    """Fit the model to real embeddings grouped by identity (2+ images each)."""
    groups = [np.stack(v) for v in embeddings.values() if len(v) >= 2]
    means = np.stack([g.mean(axis=0) for g in groups])
    residuals = np.concatenate([g - g.mean(axis=0) for g in groups])
    dof = sum(len(g) - 1 for g in groups)
    within = residuals.T @ residuals / dof
    # The spread of identity means includes each mean's own sampling noise (S_within / n).
    mean_n = float(np.mean([len(g) for g in groups]))
    between = np.cov(means, rowvar=False) - within / mean_n
    # Keep it a covariance: clip the few eigenvalues the correction can push below zero.
    values, vectors = np.linalg.eigh(between)
    between = (vectors * np.clip(values, 1e-6, None)) @ vectors.T
    return EmbeddingModel(
        means.mean(axis=0), between, within, len(groups), sum(len(g) for g in groups)
    )


def fitted(
    pipeline: FacePipeline, root: Path, cache: Path, max_identities: int, per_identity: int
) -> EmbeddingModel:
    """The model fitted to ``root`` (up to ``max_identities`` people with 2+ photos, at most
    ``per_identity`` photos each), from the cache when it is there."""
    path = cache / f"embedding-model-{pipeline.model_id}-{root.name}-{max_identities}.npz"
    if path.is_file():
        z = np.load(path)
        return EmbeddingModel(
            z["mean"], z["between"], z["within"], int(z["identities"]), int(z["images"])
        )
    people: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(photos) >= 2:
            people[folder.name] = photos[:per_identity]
        if len(people) == max_identities:
            break
    paths = [p for photos in people.values() for p in photos]
    found = embed_images(largest_face_embedder(pipeline), paths, progress=True)
    grouped = {
        name: [e for p in photos if (e := found[p]) is not None] for name, photos in people.items()
    }
    model = fit(grouped)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        mean=model.mean,
        between=model.between,
        within=model.within,
        identities=model.identities,
        images=model.images,
    )
    return model
