"""Settings: defaults, YAML file, environment overrides, validation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from facegallery.core.config import DeploymentSettings, QueueSettings, Settings, load_settings
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


def _load(tmp_path: Path, content: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings of a file alone (the scratch gallery of the test session unset)."""
    monkeypatch.delenv("FACEGALLERY_GALLERY__URI", raising=False)
    config = tmp_path / "settings.yaml"
    config.write_text(content)
    return load_settings(config)


def test_each_server_address_is_said_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's settings and the client's address derive from each other, whichever the
    file gives, so every command with the same file reaches the same servers."""
    defaults = _load(tmp_path, "{}\n", monkeypatch)
    assert defaults.queue.url == "redis://127.0.0.1:6379/0"
    assert "://" not in defaults.gallery.uri  # the embedded Lite file stays the default
    by_server = _load(tmp_path, "redis:\n  port: 16379\nmilvus:\n  port: 19999\n", monkeypatch)
    assert by_server.queue.url == "redis://127.0.0.1:16379/0"
    assert by_server.gallery.uri == "http://127.0.0.1:19999"
    by_client = _load(
        tmp_path,
        "queue:\n  url: redis://10.0.0.5:7000/0\ngallery:\n  uri: http://10.0.0.6:19531\n",
        monkeypatch,
    )
    assert (by_client.redis.host, by_client.redis.port) == ("10.0.0.5", 7000)
    assert (by_client.milvus.host, by_client.milvus.port) == ("10.0.0.6", 19531)
    agreeing = "redis:\n  port: 7000\nqueue:\n  url: redis://127.0.0.1:7000/0\n"
    assert _load(tmp_path, agreeing, monkeypatch).redis.port == 7000
    lite = _load(tmp_path, "milvus:\n  port: 19531\ngallery:\n  uri: /tmp/lite.db\n", monkeypatch)
    assert lite.gallery.uri == "/tmp/lite.db"  # an explicit Lite file is the gallery's own choice


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("redis:\n  port: 7000\nqueue:\n  url: redis://127.0.0.1:7001/0\n", "two addresses"),
        ("embed:\n  batch_size: 64\n", "embed.batch_size \\(64\\) is larger than runtime"),
        (
            "serving:\n  embedder:\n    max_batch_size: 128\n",
            "serving.embedder.max_batch_size \\(128\\)",
        ),
        ("gallery:\n  fusion_shortlist: 5\n", "gallery.fusion_shortlist: Extra inputs"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message) as refused:
        _load(tmp_path, content, monkeypatch)
    assert "\n" not in str(refused.value)


def test_the_cohort_is_named_as_such(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _load(tmp_path, "gallery:\n  cohort_size: 4\n", monkeypatch)
    assert settings.gallery.cohort_size == 4


def test_a_deployments_resources_are_custom_ones() -> None:
    """Ray's own resources have their own settings; naming one here is refused."""
    with pytest.raises(ValidationError, match="not custom resources"):
        DeploymentSettings(resources={"GPU": 1.0})
    assert DeploymentSettings(resources={"gpu_node": 0.5}).resources == {"gpu_node": 0.5}


def test_one_field_of_a_deployment_keeps_its_other_defaults(tmp_path: Path) -> None:
    """Setting a deployment's replicas must not reset its batching to the generic defaults
    (the Detector batches 8 frames, waiting 20 ms), and ``overrides()`` (what the Serve config
    and the chart's serveConfigV2 carry) names only what the file changed."""
    config = tmp_path / "settings.yaml"
    config.write_text("serving:\n  detector:\n    num_replicas: 2\n")
    settings = load_settings(config)
    detector, defaults = settings.serving.detector, Settings().serving.detector
    assert detector.num_replicas == 2
    assert detector.model_dump(exclude={"num_replicas"}) == defaults.model_dump(
        exclude={"num_replicas"}
    )
    assert detector.max_batch_size != DeploymentSettings().max_batch_size
    assert settings.overrides()["serving"] == {"detector": {"num_replicas": 2}}


def test_overrides_leave_out_an_address_derived_from_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gallery.uri says where the Milvus server is; milvus.host follows from it and is no
    override of its own (the chart's serveConfigV2 carries exactly what its settings say)."""
    for name in [n for n in os.environ if n.startswith("FACEGALLERY_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "settings.yaml"
    config.write_text("gallery:\n  uri: http://milvus:19530\nredis:\n  port: 6390\n")
    settings = Settings(**load_settings(config).overrides())
    assert (settings.milvus.host, settings.queue.url) == ("milvus", "redis://127.0.0.1:6390/0")
    overrides = load_settings(config).overrides()
    assert overrides["gallery"] == {"uri": "http://milvus:19530"} and "milvus" not in overrides
    assert overrides["redis"] == {"port": 6390} and "url" not in overrides.get("queue", {})
