"""Model store: pinned files from packages, preparation, model ids, licence gate, caching."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from facegallery.assets.artifacts import PackagedFile
from facegallery.core.config import ModelSettings, Settings
from facegallery.core.errors import FailedPrecondition, InvalidInput, PermissionDenied
from facegallery.models import PACKS, ModelStore
from facegallery.models.convert import prepare_graph, verify_prepared
from facegallery.models.specs import SFACE_2021DEC, YUNET_2023MAR


@pytest.fixture
def store(tmp_path: Path, settings: Settings) -> ModelStore:
    """An empty model directory sharing the (already downloaded) wheelhouse."""
    return ModelStore(ModelSettings(dir=tmp_path / "models", wheelhouse=settings.models.wheelhouse))


@pytest.fixture(scope="module")
def yunet_source(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    dest = tmp_path_factory.mktemp("src") / "yunet.onnx"
    return YUNET_2023MAR.source.extract(settings.models.wheelhouse, dest)


def test_prepare_then_load_without_network(store: ModelStore) -> None:
    with pytest.raises(FailedPrecondition, match="facegallery models prepare"):
        store.load(YUNET_2023MAR)
    prepared = store.prepare(YUNET_2023MAR)
    assert prepared.model_id.startswith("yunet-2023mar-") and len(prepared.model_id) == 26
    assert prepared.path.is_file()
    loaded = store.load(YUNET_2023MAR)
    assert loaded == prepared
    assert store.prepare(YUNET_2023MAR) == prepared  # cached: same id, same file


def test_prepared_graph_has_dynamic_axes(store: ModelStore) -> None:
    model = onnx.load(str(store.prepare(YUNET_2023MAR).path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    session = ort.InferenceSession(str(store.prepare(YUNET_2023MAR).path))
    outputs = session.run(None, {"input": np.zeros((3, 3, 320, 416), np.float32)})
    assert outputs[0].shape == (3, (320 // 8) * (416 // 8), 1)  # a real batch of 3


def test_tampered_prepared_file_is_detected(store: ModelStore) -> None:
    prepared = store.prepare(YUNET_2023MAR)
    prepared.path.write_bytes(prepared.path.read_bytes()[:-10])
    with pytest.raises(FailedPrecondition, match="does not match its manifest"):
        store.load(YUNET_2023MAR)


def test_source_with_wrong_sha256_is_refused(store: ModelStore, tmp_path: Path) -> None:
    wrong = PackagedFile(YUNET_2023MAR.source.distribution, YUNET_2023MAR.source.member, "0" * 64)
    with pytest.raises(FailedPrecondition, match="not the pinned one"):
        wrong.extract(store.settings.wheelhouse, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_noncommercial_pack_needs_acknowledgement(store: ModelStore) -> None:
    with pytest.raises(PermissionDenied, match="non-commercial"):
        store.pack("insightface")
    store.settings.accept_noncommercial_licence = True
    assert store.pack("insightface") is PACKS["insightface"]
    with pytest.raises(InvalidInput, match="unknown model pack"):
        store.pack("nope")


def test_operator_supplied_onnx(store: ModelStore, yunet_source: Path, tmp_path: Path) -> None:
    own = tmp_path / "my_detector.onnx"
    shutil.copy(yunet_source, own)
    prepared = store.load_file(own, "yunet")
    assert prepared.model_id.startswith("custom-yunet-my_detector-")
    assert prepared.licence == "operator-supplied"
    assert store.load_file(own, "yunet") == prepared
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(InvalidInput, match="not an ONNX model"):
        store.load_file(tmp_path / "junk.onnx", "yunet")
    with pytest.raises(InvalidInput, match="does not exist"):
        store.load_file(tmp_path / "missing.onnx", "yunet")


def test_load_configured_prefers_operator_files(store: ModelStore, yunet_source: Path) -> None:
    store.prepare(SFACE_2021DEC)
    store.settings.detector_onnx = yunet_source
    detector, recognizer = store.load_configured()
    assert detector.name.startswith("custom-yunet-") and recognizer.name == "sface-2021dec"


def test_conversion_check_catches_a_changed_graph(yunet_source: Path) -> None:
    original = yunet_source.read_bytes()
    model = prepare_graph(onnx.load_from_string(original), "yunet")
    first_conv = next(i for i in model.graph.initializer if numpy_helper.to_array(i).ndim == 4)
    weights = numpy_helper.to_array(first_conv) * 1.5
    first_conv.CopyFrom(numpy_helper.from_array(weights, first_conv.name))
    with pytest.raises(FailedPrecondition, match="outputs differ"):
        verify_prepared(original, model.SerializeToString(), "yunet")


def test_manifest_records_provenance(store: ModelStore) -> None:
    prepared = store.prepare(YUNET_2023MAR)
    manifest = json.loads((store.dir / "yunet-2023mar.json").read_text())
    assert manifest["source_sha256"] == YUNET_2023MAR.source.sha256
    assert manifest["model_id"] == prepared.model_id
    assert manifest["licence"] == "MIT"
