"""Training data: folder-per-identity sets aligned once, split by identity, sampled P x K.

Every photo goes through the product's own first half (``FaceFinder``: safe decoding, the
configured detector, its largest face, the 5-point alignment onto the 112x112 template), so
the network trains on exactly the crop the Embedder will see when it serves: the detector's
crop is part of the model. Detection is the slow part, so a set is aligned once and cached as
uint8 arrays keyed by the detector id and the file listing; epochs never re-detect.

The cache also keeps each photo's sha256 and each identity's folder name: the evidence the
guard (``check_disjoint``) uses to refuse an evaluation set that shares people or photos with
the training data. Validating on identities that were trained on is the mistake this module
exists to make impossible.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from facegallery.core.errors import FaceGalleryError, InvalidInput
from facegallery.core.limits import IMAGE_SUFFIXES
from facegallery.vision.pipeline import FaceFinder

ALIGN_BATCH = 16


@dataclass(frozen=True)
class AlignedSet:
    """A folder-per-identity set after alignment: one crop per photo that had a face.

    ``crops``: (N, 112, 112, 3) BGR uint8; ``labels``: (N,) index into ``names`` (the identity
    folders, sorted); ``hashes``: sha256 of each kept photo's bytes. ``missed``: photos with no
    usable face (relative paths), which training skips and reports."""

    crops: np.ndarray
    labels: np.ndarray
    names: list[str]
    hashes: list[str]
    missed: list[str]

    def subset(self, identities: np.ndarray) -> AlignedSet:
        """The photos of these identity indices, relabelled 0..len-1 in the given order."""
        remap = np.full(len(self.names), -1, dtype=np.int64)
        remap[identities] = np.arange(len(identities))
        keep = np.flatnonzero(remap[self.labels] >= 0)
        return AlignedSet(
            crops=self.crops[keep],
            labels=remap[self.labels[keep]],
            names=[self.names[i] for i in identities],
            hashes=[self.hashes[i] for i in keep],
            missed=[],
        )


def identity_photos(root: Path) -> list[tuple[str, Path]]:
    """(identity folder name, photo) for every image under ``root/<identity>/``, sorted."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder")
    photos = [
        (folder.name, photo)
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for photo in sorted(folder.iterdir())
        if photo.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not photos:
        raise InvalidInput(
            f"{root} has no photos in identity sub-folders (one folder per person, "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files)"
        )
    return photos


def load_aligned(
    root: Path, finder: FaceFinder, cache_dir: Path, progress: bool = True
) -> AlignedSet:
    """``root`` aligned by ``finder``, from the cache when the detector and listing match."""
    photos = identity_photos(root)
    listing = [(name, p.name, p.stat().st_size) for name, p in photos]
    key = hashlib.sha256(json.dumps([finder.detector_id, listing]).encode()).hexdigest()[:16]
    cached = cache_dir / f"{root.name}-{key}.npz"
    if cached.exists():
        return _read(cached)
    aligned = _align(root, photos, finder, progress)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial.npz")
    np.savez(
        partial,
        crops=aligned.crops,
        labels=aligned.labels,
        names=np.array(aligned.names),
        hashes=np.array(aligned.hashes),
        missed=np.array(aligned.missed, dtype=str),
    )
    partial.replace(cached)  # a crash mid-write never leaves a cache that looks whole
    return aligned


def _align(
    root: Path, photos: list[tuple[str, Path]], finder: FaceFinder, progress: bool
) -> AlignedSet:
    names = sorted({name for name, _ in photos})
    index = {name: i for i, name in enumerate(names)}
    crops: list[np.ndarray] = []
    labels: list[int] = []
    hashes: list[str] = []
    missed: list[str] = []
    with tqdm(total=len(photos), desc="aligning", unit="img", disable=not progress) as bar:
        for start in range(0, len(photos), ALIGN_BATCH):
            chunk = photos[start : start + ALIGN_BATCH]
            data = [p.read_bytes() for _, p in chunk]
            found = finder.detect_images(data, largest_only=True)
            for (name, photo), raw, faces in zip(chunk, data, found, strict=True):
                if isinstance(faces, FaceGalleryError) or not faces:
                    missed.append(str(photo.relative_to(root)))
                    continue
                crops.append(faces[0].crop)
                labels.append(index[name])
                hashes.append(hashlib.sha256(raw).hexdigest())
            bar.update(len(chunk))
    if not crops:
        raise InvalidInput(f"no face was found in any photo under {root}")
    return AlignedSet(np.stack(crops), np.array(labels, dtype=np.int64), names, hashes, missed)


def _read(path: Path) -> AlignedSet:
    with np.load(path) as stored:
        return AlignedSet(
            crops=stored["crops"],
            labels=stored["labels"].astype(np.int64),
            names=[str(n) for n in stored["names"]],
            hashes=[str(h) for h in stored["hashes"]],
            missed=[str(m) for m in stored["missed"]],
        )


def split_by_identity(
    data: AlignedSet, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Identity indices for training and validation, disjoint, drawn with ``seed``.

    Only people with two photos or more can be validated on (a genuine pair needs two), so
    the validation share is drawn among them; everyone else trains."""
    counts = np.bincount(data.labels, minlength=len(data.names))
    eligible = np.flatnonzero(counts >= 2)
    wanted = round(fraction * len(data.names))
    if wanted < 2 or len(eligible) < wanted:
        raise InvalidInput(
            f"validation needs at least 2 held-out people with 2+ photos: {len(data.names)} "
            f"identities ({len(eligible)} with 2+ photos) at validation_fraction {fraction}"
        )
    rng = np.random.default_rng(seed)
    validation = np.sort(rng.choice(eligible, size=wanted, replace=False))
    training = np.setdiff1d(np.arange(len(data.names)), validation)
    return training, validation


class PKSampler:
    """Batches of P identities x K photos each: every triplet or pair loss needs positives in
    the batch, and classification losses train as well on them. One epoch visits every
    identity once as one of a batch's P; a person with fewer than K photos repeats photos
    (augmentation makes the copies differ)."""

    def __init__(self, labels: np.ndarray, p: int, k: int, seed: int) -> None:
        self.by_identity = [np.flatnonzero(labels == i) for i in range(int(labels.max()) + 1)]
        self.p = min(p, len(self.by_identity))
        self.k = k
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.by_identity) // self.p

    def epoch(self) -> Iterator[np.ndarray]:
        """This epoch's batches (index arrays of length P x K), identities shuffled."""
        order = self.rng.permutation(len(self.by_identity))
        for start in range(0, len(self) * self.p, self.p):
            batch = [
                self.rng.choice(photos, self.k, replace=len(photos) < self.k)
                for photos in (self.by_identity[i] for i in order[start : start + self.p])
            ]
            yield np.concatenate(batch)

    def state(self) -> Mapping[str, Any]:
        return self.rng.bit_generator.state

    def restore(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state


@dataclass(frozen=True)
class TrainingManifest:
    """What a model was trained on: identity folder names and photo hashes. Written beside
    every checkpoint and exported model so that evaluation can refuse overlap."""

    names: frozenset[str]
    hashes: frozenset[str]

    @classmethod
    def of(cls, data: AlignedSet) -> TrainingManifest:
        return cls(frozenset(data.names), frozenset(data.hashes))

    def write(self, path: Path) -> None:
        payload = {"identities": sorted(self.names), "photo_sha256": sorted(self.hashes)}
        path.write_text(json.dumps(payload) + "\n")

    @classmethod
    def read(cls, path: Path) -> TrainingManifest:
        payload = json.loads(path.read_text())
        return cls(frozenset(payload["identities"]), frozenset(payload["photo_sha256"]))


def manifest_path(model: Path) -> Path:
    """Where an exported model's training manifest lies: ``OUT.training.json``."""
    return model.with_suffix(".training.json")


def guard_evaluation(recognizer_onnx: Path | None, *roots: Path) -> None:
    """Before evaluating a model trained here (its manifest beside it), refuse sets that
    overlap its training data; models without a manifest (the packs') pass."""
    if recognizer_onnx is None or not manifest_path(recognizer_onnx).is_file():
        return
    manifest = TrainingManifest.read(manifest_path(recognizer_onnx))
    for root in roots:
        check_disjoint(manifest, root)


def check_disjoint(manifest: TrainingManifest, root: Path) -> None:
    """Refuse (``InvalidInput``) an evaluation set under ``root`` that shares an identity
    folder name or a photo's bytes with the training data: its numbers would measure memory,
    not recognition of new people."""
    photos = identity_photos(root)
    shared_names = sorted({name for name, _ in photos} & manifest.names)
    shared_photos = [
        str(p.relative_to(root))
        for _, p in photos
        if hashlib.sha256(p.read_bytes()).hexdigest() in manifest.hashes
    ]
    if shared_names or shared_photos:
        examples = ", ".join((shared_names + shared_photos)[:5])
        raise InvalidInput(
            f"{root} overlaps the model's training data ({len(shared_names)} identity "
            f"folder(s), {len(shared_photos)} photo(s) in common, e.g. {examples}): evaluate "
            "on people the model never saw (rename a folder only if it is a different person)"
        )
