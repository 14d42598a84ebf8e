"""Kept crops (gallery.keep_crops) and moving a gallery to a new model from them
(facegallery reembed): real models, a real Milvus Lite file, the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from facegallery.core import ids
from facegallery.core.config import GallerySettings, Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.gallery.connection import MilvusConnection
from facegallery.gallery.crops import CropStore
from facegallery.models import ModelStore
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.service.reembed import reembed
from facegallery.vision.pipeline import FacePipeline
from facegallery.vision.sheet import SHEET_SHAPE, aligned_part

runner = CliRunner()


def _keeping(settings: Settings, uri: Path, keep: bool = True, cap: int = 10) -> Settings:
    kept = settings.model_copy(deep=True)
    kept.gallery.uri = str(uri)
    kept.gallery.keep_crops = keep
    kept.gallery.max_templates_per_user = cap
    return kept


def _service(pipeline: FacePipeline, settings: Settings) -> FaceService:
    gallery = Gallery(settings.gallery, pipeline.model_id, pipeline.embedder.dimension)
    return FaceService(pipeline, gallery, Thresholds(settings.matching), settings)


def _image(samples: Samples, name: str) -> ImageInput:
    return ImageInput(name, samples.photo(name).read_bytes())


def test_crops_are_kept_exactly_and_go_with_their_templates(
    pipeline: FacePipeline, settings: Settings, samples: Samples, tmp_path: Path
) -> None:
    plain = _service(pipeline, _keeping(settings, tmp_path / "plain.db", keep=False))
    plain.enroll("g", "obama", [_image(samples, "obama.jpg")])
    assert not plain.gallery.crops.present  # off by default: no face images stored
    assert not plain.gallery.connection.client.has_collection(plain.gallery.crops.collection)

    service = _service(pipeline, _keeping(settings, tmp_path / "kept.db", cap=1))
    first = service.enroll("g", "obama", [_image(samples, "obama.jpg")]).outcomes[0]
    assert first.template_id is not None
    stored = service.gallery.crops.get("g", [first.template_id])[first.template_id]
    aligned = pipeline.detect_images([samples.photo("obama.jpg").read_bytes()])[0]
    assert not isinstance(aligned, Exception)
    assert np.array_equal(stored, aligned[0].crop)  # lossless: what the Embedder saw

    # The cap of 1 evicts one of the two; the survivor's crop is the one left.
    result = service.enroll("g", "obama", [_image(samples, "obama2.jpg")])
    kept = [t.template_id for t in service.templates("g", "obama")]
    assert len(kept) == 1 and service.gallery.crops.count("g") == 1
    assert set(service.gallery.crops.get("g", [first.template_id, *result.evicted])) <= set(kept)
    assert list(service.gallery.crops.get("g", kept)) == kept

    service.enroll("g", "biden", [_image(samples, "biden.jpg")])
    service.delete_user("g", "obama")
    assert service.gallery.crops.count("g") == 1  # only biden's is left
    service.gallery.drop()
    client = service.gallery.connection.client
    side = [service.gallery.crops.collection, *service.gallery.impostor_sample_collections]
    assert not any(client.has_collection(name) for name in side)


def test_reembed_moves_a_gallery_once_and_reports_what_could_not_move(
    pipeline: FacePipeline, settings: Settings, samples: Samples, tmp_path: Path
) -> None:
    source = _keeping(settings, tmp_path / "move.db")
    service = _service(pipeline, source)
    for user, photo in [
        ("obama", "obama.jpg"),
        ("collins", "astronaut.png"),
        ("biden", "biden.jpg"),
    ]:
        assert service.enroll("move", user, [_image(samples, photo)]).enrolled == 1
    # Enrolled while crops were not kept: it cannot move without its photo.
    no_crops = _service(pipeline, _keeping(settings, tmp_path / "move.db", keep=False))
    assert no_crops.enroll("move", "hopper", [_image(samples, "grace_hopper.jpg")]).enrolled

    target = source.model_copy(deep=True)
    target.embed.flip_tta = False  # another model id: another collection
    report = reembed(source, target, "move", page=2, progress=False)
    assert report.target_model == pipeline.model_id.removesuffix("+flip") != report.source_model
    assert (report.templates, report.reembedded, report.already_there) == (4, 3, 0)
    assert (report.without_crop, report.users_without_crop) == (1, ["hopper"])
    assert (report.target_users, report.target_templates) == (3, 3)

    moved = FacePipeline.from_settings(target)
    moved_service = _service(moved, source)
    assert moved_service.gallery.crops.count("move") == 3  # so it can move again
    direct = moved.analyze(samples.photo("obama.jpg").read_bytes())[0].embedding
    assert direct is not None
    stored = moved_service.templates("move", "obama")[0]
    assert float(stored.embedding @ direct) > 0.99999  # as if enrolled with the new model
    assert moved_service.get_user("move", "biden").templates == (
        service.get_user("move", "biden").templates  # ids, quality, source, enrolled at
    )
    found = moved_service.identify("move", samples.photo("obama2.jpg").read_bytes())
    assert found[0].candidates[0].user_id == "obama"

    again = reembed(source, target, "move", progress=False)
    assert (again.reembedded, again.already_there, again.target_templates) == (0, 3, 3)

    with pytest.raises(InvalidInput, match="own model"):
        reembed(source, source, "move", progress=False)
    no_crops.enroll("bare", "hopper", [_image(samples, "grace_hopper.jpg")])
    with pytest.raises(FailedPrecondition, match="re-enroll from the photos"):
        reembed(source, target, "bare", progress=False)


def test_reembed_command_to_another_recognizer_file(
    insightface_settings: Settings,
    accurate_settings: Settings,
    samples: Samples,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("FACEGALLERY_GALLERY__KEEP_CROPS", "true")
    monkeypatch.setenv("FACEGALLERY_GALLERY__URI", str(tmp_path / "cmd.db"))  # its own file
    for user, photo in [("obama", "obama.jpg"), ("biden", "biden.jpg")]:
        enrolled = runner.invoke(
            app, ["enroll", "-g", "cmd", "-u", user, str(samples.photo(photo))]
        )
        assert enrolled.exit_code == 0, enrolled.stderr
    store = ModelStore(insightface_settings.models)
    onnx = store.load(store.pack("insightface").recognizer).path  # ArcFace MobileFaceNet

    refused = runner.invoke(app, ["reembed", "-g", "cmd", "--to-model", str(onnx)])
    assert refused.exit_code == 2 and "--to-family" in refused.stderr  # no family recorded

    moved = runner.invoke(
        app, ["reembed", "-g", "cmd", "--to-model", str(onnx), "--to-family", "arcface", "--json"]
    )
    assert moved.exit_code == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["target_model"].startswith("custom-arcface-") and report["reembedded"] == 2
    assert report["target_users"] == 2 and report["without_crop"] == 0
    # Two users are too few to self-calibrate, and the new model has no 1:1 threshold yet.
    assert "no threshold for model" in str(report["operating_point"])

    again = runner.invoke(
        app, ["reembed", "-g", "cmd", "--to-model", str(onnx), "--to-family", "arcface"]
    )
    assert again.exit_code == 0 and "0 template(s) re-embedded, 2 already there" in again.stdout

    # Kept crops are sheets (the aligned crop and dlib's chip): the gallery moves to the
    # accurate pack too, which sees both.
    both = runner.invoke(app, ["reembed", "-g", "cmd", "--to-model", str(onnx), "--to-pack", "x"])
    assert both.exit_code == 2 and "one of --to-model FILE or --to-pack NAME" in both.stderr
    family = ["reembed", "-g", "cmd", "--to-pack", "accurate", "--to-family", "sface"]
    assert "--to-family goes with --to-model" in runner.invoke(app, family).stderr
    # The insightface pack aligns its probes on SCRFD's points, these crops on YuNet's.
    other = runner.invoke(app, ["reembed", "-g", "cmd", "--to-pack", "insightface"])
    assert other.exit_code == 2 and "detects with scrfd-500m-bnkps" in other.stderr
    fused = runner.invoke(app, ["reembed", "-g", "cmd", "--to-pack", "accurate", "--json"])
    assert fused.exit_code == 0, fused.stderr
    report = json.loads(fused.stdout)
    assert report["target_model"].startswith("fused-sface-dlib-") and report["reembedded"] == 2


def test_a_collection_made_before_sheets_keeps_aligned_crops(tmp_path: Path) -> None:
    """Milvus 2.3 cannot add fields: a crops collection of one text field (as they were
    made before sheets) goes on keeping what it always held, a sheet's aligned part."""
    connection = MilvusConnection(GallerySettings(uri=str(tmp_path / "old.db")))
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("template_id", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("gallery", DataType.VARCHAR, max_length=ids.GALLERY_MAX, is_partition_key=True)
    schema.add_field("user_id", DataType.VARCHAR, max_length=ids.USER_MAX)
    schema.add_field("crop", DataType.VARCHAR, max_length=65535)
    connection.ensure_collection("crops_old", schema)
    store = CropStore(connection, "crops_old")
    store.open(create=True)
    assert store.fields == ("crop",)
    rng = np.random.default_rng(0)  # noise: the least compressible sheet there is
    sheet = rng.integers(0, 256, SHEET_SHAPE, dtype=np.uint8)
    template = "0" * 32
    store.put("g", {template: ("u", sheet)})
    assert np.array_equal(store.get("g", [template])[template], aligned_part(sheet[None])[0])
    fresh = CropStore(connection, "crops_new")
    fresh.open(create=True)
    fresh.put("g", {template: ("u", sheet)})  # three fields hold even noise
    assert np.array_equal(fresh.get("g", [template])[template], sheet)
