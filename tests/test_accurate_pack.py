"""The "accurate" pack end to end in process: YuNet's faces, SFace on the aligned crop fused
with dlib's network on dlib's own chip, through the real gallery (Milvus Lite), its kept
crops and ``facegallery reembed``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.gallery.crops import encode_crop
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.service.reembed import reembed
from facegallery.vision.align import CROP_SIZE
from facegallery.vision.embed import Embedder
from facegallery.vision.fused import SHEET_SHAPE, FusedEmbedder
from facegallery.vision.pipeline import FacePipeline

PEOPLE = ("obama.jpg", "obama2.jpg", "biden.jpg", "grace_hopper.jpg")


def _embeddings(pipeline: FacePipeline, samples: Samples) -> dict[str, np.ndarray]:
    """The embedding of the one face in each photo of PEOPLE."""
    found = {}
    for name in PEOPLE:
        [face] = pipeline.analyze(samples.photo(name).read_bytes())
        assert face.embedding is not None
        found[name] = face.embedding
    return found


def test_the_embedding_is_both_networks_halves(
    accurate_pipeline: FacePipeline, pipeline: FacePipeline, samples: Samples
) -> None:
    embedder = accurate_pipeline.embedder
    assert isinstance(embedder, FusedEmbedder) and isinstance(pipeline.embedder, Embedder)
    assert embedder.dimension == 256 and accurate_pipeline.model_id.startswith("fused-sface-dlib-")
    assert accurate_pipeline.model_id != pipeline.model_id
    photo = samples.photo("obama.jpg").read_bytes()
    [fused], [plain] = accurate_pipeline.analyze(photo), pipeline.analyze(photo)
    assert fused.crop is not None and plain.crop is not None
    assert fused.crop.shape == SHEET_SHAPE
    # The sheet holds the default pack's aligned crop exactly, and its quality verdict is
    # the same (measured on that crop).
    assert np.array_equal(fused.crop[:CROP_SIZE, :CROP_SIZE], plain.crop)
    assert fused.quality == plain.quality
    assert fused.embedding is not None and plain.embedding is not None
    assert math.isclose(float(np.linalg.norm(fused.embedding)), 1.0, abs_tol=1e-5)
    # First half: SFace's unit vector over sqrt(2); second: dlib's network on the chip.
    np.testing.assert_allclose(fused.embedding[:128] * math.sqrt(2), plain.embedding, atol=1e-5)
    dlib_half = embedder.second.embed(np.ascontiguousarray(fused.crop[None, :, CROP_SIZE:]))[0]
    np.testing.assert_allclose(fused.embedding[128:] * math.sqrt(2), dlib_half, atol=1e-5)


def test_same_people_score_above_strangers(
    accurate_pipeline: FacePipeline, samples: Samples
) -> None:
    vectors = _embeddings(accurate_pipeline, samples)
    same = float(vectors["obama.jpg"] @ vectors["obama2.jpg"])
    strangers = [
        float(vectors[a] @ vectors[b])
        for a, b in [("obama.jpg", "biden.jpg"), ("obama.jpg", "grace_hopper.jpg")]
    ]
    threshold = Thresholds(accurate_pipeline.settings.matching).get(accurate_pipeline.model_id)
    assert same > threshold.threshold > max(strangers)


def _service(pipeline: FacePipeline, settings: Settings, uri: Path, keep: bool) -> FaceService:
    kept = settings.model_copy(deep=True)
    kept.gallery.uri = str(uri)
    kept.gallery.keep_crops = keep
    gallery = Gallery(kept.gallery, pipeline.model_id, pipeline.embedder.dimension)
    return FaceService(pipeline, gallery, Thresholds(kept.matching), kept)


def _image(samples: Samples, name: str) -> ImageInput:
    return ImageInput(name, samples.photo(name).read_bytes())


def test_enroll_identify_verify_through_the_gallery(
    accurate_pipeline: FacePipeline,
    accurate_settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    service = _service(accurate_pipeline, accurate_settings, tmp_path / "g.db", keep=True)
    enrolled = service.enroll("g", "obama", [_image(samples, "obama.jpg")])
    assert [o.enrolled for o in enrolled.outcomes] == [True]
    found = service.identify("g", samples.photo("obama2.jpg").read_bytes())
    assert [f.decision for f in found] == ["obama"]
    stranger = service.identify("g", samples.photo("biden.jpg").read_bytes())
    assert [f.decision for f in stranger] == ["unknown"]
    assert service.verify("g", "obama", samples.photo("obama2.jpg").read_bytes()).match
    assert not service.verify("g", "obama", samples.photo("grace_hopper.jpg").read_bytes()).match
    # The kept crop is the whole sheet, losslessly, over more than one of Milvus's text fields.
    template = enrolled.outcomes[0].template_id
    assert template is not None
    kept = service.gallery.crops.get("g", [template])[template]
    analysed = accurate_pipeline.analyze(samples.photo("obama.jpg").read_bytes())[0]
    assert analysed.crop is not None and np.array_equal(kept, analysed.crop)
    assert len(encode_crop(kept)) > 65535


def test_reembed_from_sheets_to_sface_alone_and_not_back(
    accurate_pipeline: FacePipeline,
    accurate_settings: Settings,
    pipeline: FacePipeline,
    settings: Settings,
    samples: Samples,
    tmp_path: Path,
) -> None:
    uri = tmp_path / "move.db"
    fused = _service(accurate_pipeline, accurate_settings, uri, keep=True)
    fused.enroll("g", "obama", [_image(samples, "obama.jpg")])
    fused.enroll("g", "biden", [_image(samples, "biden.jpg")])
    source = fused.settings
    target = source.model_copy(deep=True)
    target.models.pack = "default"
    report = reembed(source, target, "g", progress=False)
    assert (report.reembedded, report.without_crop) == (2, 0)
    # A moved template is the one enrolling the photo with SFace alone would have made.
    plain = _service(pipeline, settings, uri, keep=True)
    moved = plain.gallery.crops.get(
        "g", [t.template_id for t in plain.gallery.templates("g", "obama")]
    )
    [crop] = moved.values()
    direct = pipeline.analyze(samples.photo("obama.jpg").read_bytes())[0]
    assert direct.crop is not None and np.array_equal(crop, direct.crop)
    probe = samples.photo("obama2.jpg").read_bytes()
    assert [f.decision for f in plain.identify("g", probe)] == ["obama"]
    # SFace's crops do not hold dlib's chip: the move back is refused before any write.
    plain.enroll("g", "grace", [_image(samples, "grace_hopper.jpg")])
    with pytest.raises(FailedPrecondition, match="re-enroll from the photos"):
        reembed(target, source, "g", progress=False)
    assert fused.gallery.stats("g").templates == 2
