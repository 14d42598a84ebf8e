"""The "accurate" pack end to end in process: YuNet's faces, SFace on the aligned crop fused
with dlib's network on dlib's own chip, through the real gallery (Milvus Lite), its kept
crops and ``facegallery reembed``."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import numpy as np

from facegallery.assets.samples import Samples
from facegallery.core.config import Settings
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.gallery.crops import encode_crop
from facegallery.models import ModelStore
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.service.reembed import reembed
from facegallery.serving.deployments import EmbedderDeployment
from facegallery.vision.align import CROP_SIZE
from facegallery.vision.embed import Embedder
from facegallery.vision.fused import FusedEmbedder
from facegallery.vision.pipeline import FacePipeline
from facegallery.vision.sheet import SHEET_SHAPE

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


def test_kept_crops_are_sheets_in_every_pack(
    settings: Settings, pipeline: FacePipeline, samples: Samples, tmp_path: Path
) -> None:
    """With crops kept, the default pack's Detector cuts an enrolled face's sheet too (so a
    kept gallery can move to any shipped recognizer), and only an enrolled face's; SFace
    sees exactly its aligned crop either way."""
    keeping = settings.model_copy(deep=True)
    keeping.gallery.keep_crops = True
    keeping.gallery.uri = str(tmp_path / "kept.db")
    kept = FacePipeline.from_settings(keeping)
    assert kept.model_id == pipeline.model_id and kept.landmarks is not None
    photo = samples.photo("obama.jpg").read_bytes()
    sheets, plain = kept.detect_images([photo], sheets=True)[0], kept.detect_images([photo])[0]
    assert not isinstance(sheets, Exception) and not isinstance(plain, Exception)
    assert sheets[0].crop.shape == SHEET_SHAPE and plain[0].crop.shape == (CROP_SIZE, CROP_SIZE, 3)
    assert np.array_equal(sheets[0].crop[:CROP_SIZE, :CROP_SIZE], plain[0].crop)
    [[from_sheet]], [[from_crop]] = kept.embed([sheets]), kept.embed([plain])
    assert from_sheet.embedding is not None and from_crop.embedding is not None
    np.testing.assert_array_equal(from_sheet.embedding, from_crop.embedding)
    # Through the service: the enrolled face's sheet is kept; identify cuts no chip.
    service = FaceService(
        kept,
        Gallery(keeping.gallery, kept.model_id, kept.embedder.dimension),
        Thresholds(keeping.matching),
        keeping,
    )
    template = service.enroll("g", "obama", [_image(samples, "obama.jpg")]).outcomes[0].template_id
    assert template is not None
    assert service.gallery.crops.get("g", [template])[template].shape == SHEET_SHAPE
    [identified] = service.analyze([samples.photo("obama2.jpg").read_bytes()])
    assert not isinstance(identified, Exception) and identified[0].crop is not None
    assert identified[0].crop.shape == (CROP_SIZE, CROP_SIZE, 3)


def test_reembed_moves_sheets_between_packs_both_ways(
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
    accurate, default = fused.settings, fused.settings.model_copy(deep=True)
    default.models.pack = "default"
    report = reembed(accurate, default, "g", progress=False)
    assert (report.reembedded, report.without_crop) == (2, 0)
    # A moved template is the one enrolling the photo with SFace alone would have made, and
    # keeps its sheet (so it can move again).
    plain = _service(pipeline, settings, uri, keep=True)
    [moved] = plain.gallery.templates("g", "obama")
    direct = pipeline.analyze(samples.photo("obama.jpg").read_bytes())[0]
    assert direct.embedding is not None
    np.testing.assert_allclose(moved.embedding, direct.embedding, atol=1e-6)
    kept = plain.gallery.crops.get("g", [moved.template_id])[moved.template_id]
    assert kept.shape == SHEET_SHAPE
    probe = samples.photo("obama2.jpg").read_bytes()
    assert [f.decision for f in plain.identify("g", probe)] == ["obama"]

    # Back to the accurate pack: the sheets move; a crop kept before sheets (an aligned crop
    # alone, as this pipeline without dlib's landmarks keeps) lacks dlib's chip: its user is
    # named to re-enroll, and nothing of it is written.
    plain.enroll("g", "grace", [_image(samples, "grace_hopper.jpg")])
    fused.gallery.delete_user("g", "biden")
    back = reembed(default, accurate, "g", progress=False)
    assert (back.reembedded, back.already_there, back.without_crop) == (1, 1, 1)
    assert back.users_without_crop == ["grace"]
    [again] = fused.gallery.templates("g", "biden")
    first = accurate_pipeline.analyze(samples.photo("biden.jpg").read_bytes())[0]
    assert first.embedding is not None
    np.testing.assert_allclose(again.embedding, first.embedding, atol=1e-6)
    assert fused.gallery.stats("g").users == 2

    # A page holding both sheets and an aligned crop moves to a recognizer of aligned crops
    # (here SFace's file as an operator's own model: another model id).
    own = default.model_copy(deep=True)
    own.models.recognizer_onnx = ModelStore(settings.models).load_configured()[1].path
    mixed = reembed(default, own, "g", progress=False)
    assert (mixed.reembedded, mixed.without_crop) == (3, 0)


def test_served_embedder_batches_crops_and_sheets_together(
    settings: Settings, pipeline: FacePipeline, samples: Samples
) -> None:
    """One Embedder batch may join identify calls (aligned crops) and enrollments that keep
    their crops (sheets): each call becomes the network's own input first."""
    keeping = settings.model_copy(deep=True)
    keeping.gallery.keep_crops = True
    finder = FacePipeline.from_settings(keeping)
    photo = samples.photo("group.jpg").read_bytes()
    sheets, crops = finder.detect_images([photo], sheets=True)[0], finder.detect_images([photo])[0]
    assert not isinstance(sheets, Exception) and not isinstance(crops, Exception)
    deployment = EmbedderDeployment(keeping.model_dump(mode="json"))
    calls = [np.stack([f.crop for f in sheets]), np.stack([f.crop for f in crops])]
    from_sheets, from_crops = asyncio.run(deployment._embed(calls))
    np.testing.assert_allclose(from_sheets, from_crops, atol=1e-6)
    np.testing.assert_allclose(from_crops, pipeline.embedder.embed(calls[1]), atol=1e-6)
