"""Validation during training: verification pairs among held-out people, scored the way the
product scores them (unit embeddings averaged with the mirror image, cosine), reported with
the evaluation protocol's own metrics (10-fold accuracy, AUC, TAR@FAR).

The held-out people are split into folds of their own, and impostor pairs are drawn within a
fold, so the 10-fold threshold is chosen on other people, as ``pairs.csv`` does."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from torch import nn

from facegallery.decisions.rates import tar_at_far
from facegallery.evaluation.metrics import auc, kfold_accuracy
from facegallery.training.data import AlignedSet
from facegallery.training.model import preprocess

# A converted or exported model must give the reference's embeddings to this cosine.
PARITY_COSINE = 0.999

FOLDS = 10
EMBED_BATCH = 128
VALIDATION_FAR = 1e-2


@dataclass(frozen=True)
class ValidationPairs:
    """Index pairs into the validation crops, same-person labels and identity-disjoint folds."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    folds: np.ndarray


def validation_pairs(labels: np.ndarray, impostors: int, seed: int) -> ValidationPairs:
    """Every genuine pair of the held-out people, and ``impostors`` different-person pairs."""
    rng = np.random.default_rng(seed)
    people = np.unique(labels)
    folds = min(FOLDS, len(people) // 2)
    fold_of = dict(
        zip(people.tolist(), (rng.permutation(len(people)) % folds).tolist(), strict=True)
    )
    pairs: list[tuple[int, int, bool, int]] = []
    for person in people:
        photos = np.flatnonzero(labels == person)
        pairs += [(int(a), int(b), True, fold_of[int(person)]) for a, b in combinations(photos, 2)]
    members = [np.array([p for p in people if fold_of[int(p)] == f]) for f in range(folds)]
    for _ in range(impostors):
        fold = int(rng.integers(folds))
        one, other = rng.choice(members[fold], 2, replace=False)
        pairs.append(
            (
                int(rng.choice(np.flatnonzero(labels == one))),
                int(rng.choice(np.flatnonzero(labels == other))),
                False,
                fold,
            )
        )
    first, second, same, fold_ids = (np.array(column) for column in zip(*pairs, strict=True))
    return ValidationPairs(first, second, same.astype(bool), fold_ids)


@torch.no_grad()
def embed_crops(model: nn.Module, crops: np.ndarray) -> np.ndarray:
    """Unit embeddings of BGR uint8 crops, each averaged with its mirror (as the Embedder)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(crops), EMBED_BATCH):
        batch = preprocess(crops[start : start + EMBED_BATCH])
        out.append(F.normalize(model(batch) + model(batch.flip(3)), dim=1))
    model.train(was_training)
    return torch.cat(out).numpy()


def lowest_cosine(first: np.ndarray, second: np.ndarray) -> float:
    """The lowest cosine between matching rows of two (N, D) embedding arrays: how a
    conversion or an export is checked against its reference (``PARITY_COSINE``)."""
    a = first / np.linalg.norm(first, axis=1, keepdims=True)
    b = second / np.linalg.norm(second, axis=1, keepdims=True)
    return float(np.einsum("ij,ij->i", a, b).min())


def cosines(vectors: np.ndarray, pairs: ValidationPairs) -> np.ndarray:
    """Each pair's cosine, from unit embeddings indexed like the validation crops."""
    scores: np.ndarray = np.einsum("ij,ij->i", vectors[pairs.first], vectors[pairs.second])
    return scores


def pair_scores(model: nn.Module, data: AlignedSet, pairs: ValidationPairs) -> np.ndarray:
    """Each held-out pair's cosine under ``model``."""
    return cosines(embed_crops(model, data.crops), pairs)


def validation_metrics(scores: np.ndarray, pairs: ValidationPairs) -> dict[str, float]:
    """10-fold accuracy (balanced pairs), AUC and TAR@FAR 1e-2 (all pairs) of these scores."""
    measured = tar_at_far(scores, pairs.same, VALIDATION_FAR)
    # Accuracy on as many different-person pairs as same-person ones (as pairs.csv has):
    # with thousands of impostors, "reject everything" would score near 100%.
    balanced = pairs.same | (np.cumsum(~pairs.same) <= pairs.same.sum())
    kfold = kfold_accuracy(scores[balanced], pairs.same[balanced], pairs.folds[balanced])
    return {
        "val_accuracy": kfold.mean,
        "val_auc": auc(scores, pairs.same),
        "val_tar_at_far_1e-2": measured[0] if measured is not None else float("nan"),
    }
