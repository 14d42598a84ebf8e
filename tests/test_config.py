"""Settings: defaults, YAML file, environment overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from facegallery.core.config import QueueSettings, load_settings
from facegallery.core.errors import InvalidInput


def test_yaml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(
        "detect:\n  score_threshold: 0.7\n  max_faces: 3\nembed:\n  flip_tta: false\n"
    )
    monkeypatch.setenv("FACEGALLERY_DETECT__MAX_FACES", "9")
    settings = load_settings(config)
    assert settings.detect.score_threshold == 0.7
    assert settings.detect.max_faces == 9  # the environment wins over the file
    assert settings.embed.flip_tta is False
    assert settings.quality.min_face_px == 32.0  # untouched default


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text("models:\n  pack: insightface\n")
    monkeypatch.setenv("FACEGALLERY_CONFIG", str(config))
    assert load_settings().models.pack == "insightface"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("detect:\n  score_threshold: 2\n", "is invalid"),
        ("nonsense_section: 1\n", "is invalid"),
        ("gallery:\n  grouping: server\n", "needs fusion: max"),
    ],
)
def test_invalid_files_are_explained(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(content)
    with pytest.raises(InvalidInput, match=message):
        load_settings(config)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_invalid_environment_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a config file a bad FACEGALLERY_* value is an InvalidInput too (the command
    lines print it as one line and exit 2), not a raw validation traceback."""
    monkeypatch.delenv("FACEGALLERY_CONFIG", raising=False)
    monkeypatch.setenv("FACEGALLERY_MATCHING__STATISTIC", "bogus")
    with pytest.raises(InvalidInput, match="a FACEGALLERY_\\* environment variable is invalid"):
        load_settings()
    monkeypatch.setenv("FACEGALLERY_MATCHING__STATISTIC", "score")
    assert load_settings().matching.statistic == "score"


def test_a_keys_queue_share_must_hold_the_largest_job() -> None:
    with pytest.raises(ValidationError, match="refused for ever"):
        QueueSettings(max_queued_bytes=100, owner_share=0.25, max_job_bytes=50)
    assert QueueSettings(max_queued_bytes=100, owner_share=0.5, max_job_bytes=50).owner_share
