"""Moving a gallery to a new embedding model from its kept crops (``gallery.keep_crops``),
without the original photos: ``facegallery reembed``.

Embeddings of two models cannot be compared, so each model has its own collection
(``gallery/store.py``). The move reads one gallery's templates from the source model's
collection a page at a time with their crops, embeds the crops with the target model, and
writes them into the target's collection under the same template ids, qualities, sources and
enrollment times, with their crops (so the gallery can move again). A crop is what the
Detector made at enrollment, stored losslessly, so a moved template is the one enrolling the
photo with the new model would have made.

A kept crop is the face's sheet (``vision.sheet``): the aligned crop and dlib's chip, what
every shipped recognizer sees, so a gallery moves between any of them, both ways, and the
moved templates keep their sheets (but in a target crops collection made before sheets, which
keeps aligned crops alone). Aligned crops alone (kept before sheets, or in such a collection)
move to a recognizer of aligned crops; to the accurate pack they are counted and their users
named like templates without a crop (they lack dlib's chip; re-enroll those from the photos).

Idempotent by template id: templates already in the target are skipped, so a move cut short
resumes by running it again, and a second run writes nothing. Templates enrolled before crops
were kept cannot move; they are counted and their users named (re-enroll those from photos).
The source is left as it was: serve the target by configuring its model, and drop the old
collection when done. Enrollments or deletions made to the source during a move reach the
target only through another run (a rerun copies new templates; deletions must be repeated).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from facegallery.core import ids
from facegallery.core.config import ModelSettings, Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput, NotFound
from facegallery.decisions.openset import OpenSetCalibrator
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery, NewTemplate, TemplateInfo
from facegallery.models import PACKS
from facegallery.vision.embed import FaceEmbedder
from facegallery.vision.pipeline import build_embedder
from facegallery.vision.sheet import as_input

NAMED_USERS_MAX = 100


@dataclass(frozen=True)
class ReembedReport:
    """What a move did. ``without_crop``: templates without a kept crop the target can use
    (none kept, or an aligned crop alone for the accurate pack); ``users_without_crop``: up
    to 100 users with a template that could not move; ``operating_point``: the target
    gallery's after its calibration (or why it has none yet)."""

    gallery: str
    source_model: str
    target_model: str
    templates: int
    reembedded: int
    already_there: int
    without_crop: int
    users_without_crop: list[str]
    target_users: int
    target_templates: int
    operating_point: dict[str, object] | str

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def reembed(
    source: Settings, target: Settings, gallery: str, page: int = 256, progress: bool = True
) -> ReembedReport:
    """Move ``gallery`` from ``source``'s recognizer to ``target``'s (the gallery
    connection and options come from ``source``)."""
    gallery = ids.gallery_id(gallery)
    _check_detectors(source, target)
    old, new = build_embedder(source), build_embedder(target)  # a move never detects
    if old.model_id == new.model_id:
        raise InvalidInput(f"the target is the gallery's own model ({old.model_id}): nothing to do")
    origin = Gallery(source.gallery, old.model_id, old.dimension)
    stats = origin.stats(gallery)
    if stats.templates == 0:
        raise NotFound(f"gallery {gallery!r} has no templates of model {old.model_id}")
    if origin.crops.count(gallery) == 0:
        raise FailedPrecondition(
            f"none of gallery {gallery!r}'s {stats.templates} templates has a kept crop "
            "(gallery.keep_crops was off when they were enrolled): re-enroll from the photos "
            "with the new model configured instead"
        )
    destination = Gallery(source.gallery, new.model_id, new.dimension)
    moved = skipped = 0
    missing: Counter[str] = Counter()
    with tqdm(total=stats.templates, unit="template", disable=not progress) as bar:
        for rows in origin.template_pages(gallery, page):
            there = destination.stored([t.template_id for _, t in rows])
            todo = [(u, t) for u, t in rows if t.template_id not in there]
            kept = origin.crops.get(gallery, [t.template_id for _, t in todo])
            # Each kept crop as the target sees it (its part of a sheet); an aligned crop
            # alone holds nothing for the accurate pack and counts as missing.
            inputs = {t: as_input(c[None], new.input_shape) for t, c in kept.items()}
            usable = {t: i for t, i in inputs.items() if i is not None}
            missing.update(u for u, t in todo if t.template_id not in usable)
            movable = [(u, t) for u, t in todo if t.template_id in usable]
            _write(destination, gallery, movable, kept, usable, new)
            moved, skipped = moved + len(movable), skipped + len(there)
            bar.update(len(rows))
    destination.settle()
    after = destination.stats(gallery)
    return ReembedReport(
        gallery,
        old.model_id,
        new.model_id,
        stats.templates,
        moved,
        skipped,
        sum(missing.values()),
        sorted(missing)[:NAMED_USERS_MAX],
        after.users,
        after.templates,
        _operating_point(destination, target, gallery),
    )


def _check_detectors(source: Settings, target: Settings) -> None:
    """Kept crops were aligned on the configured detector's landmarks (as configured now: the
    crops do not say); a target whose detector differs (another pack's) would align its
    probes on other points, so its templates would not be the ones enrolling the photos
    makes."""
    made_by, wanted = _detector_name(source.models), _detector_name(target.models)
    if None not in (made_by, wanted) and made_by != wanted:
        raise InvalidInput(
            f"pack {target.models.pack!r} detects with {wanted}, and these crops were "
            f"aligned on {made_by}'s landmarks: re-enroll from the photos with that pack "
            "configured"
        )


def _detector_name(models: ModelSettings) -> str | None:
    """The configured detector: an operator's own file, or the pack's model (None for an
    unknown pack, which is refused later with the known ones' names)."""
    if models.detector_onnx is not None:
        return str(models.detector_onnx.expanduser())
    pack = PACKS.get(models.pack)
    return None if pack is None else pack.detector.name


def _write(
    destination: Gallery,
    gallery: str,
    rows: list[tuple[str, TemplateInfo]],
    crops: dict[str, np.ndarray],
    inputs: dict[str, np.ndarray],
    embedder: FaceEmbedder,
) -> None:
    """Embed one page's ``inputs`` (each template's kept crop as the target sees it) in one
    batch and store them as the target's templates, with their kept ``crops``."""
    if not rows:
        return
    vectors = embedder.embed(np.concatenate([inputs[t.template_id] for _, t in rows]))
    batch: dict[str, list[NewTemplate]] = {}
    for (user_id, t), vector in zip(rows, vectors, strict=True):
        crop = crops[t.template_id]
        new = NewTemplate(t.template_id, vector, t.quality, t.source, crop, t.created_at)
        batch.setdefault(user_id, []).append(new)
    destination.add_many(gallery, batch, settle=False)


def _operating_point(
    destination: Gallery, target: Settings, gallery: str
) -> dict[str, object] | str:
    """Self-calibrate the moved gallery now, so its first identify is decided right."""
    calibrator = OpenSetCalibrator(destination, Thresholds(target.matching), target.matching)
    calibrator.calibrate(gallery)
    try:
        return calibrator.operating_point(gallery).to_dict()
    except FailedPrecondition as exc:  # too small to self-calibrate and no 1:1 threshold
        return exc.message
