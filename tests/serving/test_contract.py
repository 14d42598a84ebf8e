"""The contract without a running app: the HTTP schemas and the proto messages have the same
fields, and the committed Serve config is what the settings render and what Serve accepts."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from ray.serve.schema import ServeDeploySchema

from facegallery.core.config import Settings
from facegallery.serving.app import required_resources, serve_config
from facegallery.v1 import facegallery_pb2 as pb
from facegallery.wire import schemas as s

REPO = Path(__file__).resolve().parents[2]
# The schema models whose proto message has another name.
RENAMED = {"JobView": "Job", "Template": "Template"}


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model inside an annotation like list[Face] or Face | None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _same_fields(model: type[BaseModel], descriptor: object, path: str) -> list[str]:
    proto_fields = descriptor.fields_by_name  # type: ignore[attr-defined]
    problems = []
    if set(model.model_fields) != set(proto_fields):
        problems.append(f"{path}: {sorted(model.model_fields)} != {sorted(proto_fields)}")
    for name, field in model.model_fields.items():
        inner = _model_of(field.annotation)
        proto = proto_fields.get(name)
        if proto is None:
            continue
        if (inner is None) != (proto.message_type is None):
            problems.append(f"{path}.{name}: message in one, scalar in the other")
        elif inner is not None:
            problems += _same_fields(inner, proto.message_type, f"{path}.{name}")
    return problems


MESSAGES = [
    name
    for name, value in vars(s).items()
    if isinstance(value, type)
    and issubclass(value, s.Message)
    and value is not s.Message
    and not name.startswith("Error")  # HTTP error bodies: gRPC has status codes
]


@pytest.mark.parametrize("name", MESSAGES)
def test_every_schema_model_has_the_proto_message_fields(name: str) -> None:
    model = getattr(s, name)
    descriptor = pb.DESCRIPTOR.message_types_by_name[RENAMED.get(name, name)]
    assert _same_fields(model, descriptor, name) == []


def test_every_rpc_has_its_operation() -> None:
    rpcs = set(pb.DESCRIPTOR.services_by_name["FaceGalleryService"].methods_by_name)
    assert rpcs == {
        "Detect", "Identify", "IdentifyBatch", "Verify", "Enroll", "GetJob", "WatchJob",
        "ListUsers", "GetUser", "DeleteUser", "GalleryStats",
    }  # fmt: skip


def test_committed_serve_config_is_the_rendered_one_and_valid() -> None:
    committed = yaml.safe_load((REPO / "deploy" / "serve.yaml").read_text())
    assert committed == serve_config(Settings(), {})
    ServeDeploySchema.model_validate(committed)


def test_serve_config_carries_the_settings() -> None:
    settings = Settings()
    settings.serving.embedder.num_replicas = "auto"
    settings.serving.embedder.max_replicas = 6
    settings.serving.detector.max_replicas_per_node = 1
    rendered = serve_config(settings, {"gallery": {"uri": "http://milvus:19530"}})
    ServeDeploySchema.model_validate(rendered)
    (application,) = rendered["applications"]
    assert application["args"] == {"settings": {"gallery": {"uri": "http://milvus:19530"}}}
    embedder = next(d for d in application["deployments"] if d["name"] == "Embedder")
    assert embedder["autoscaling_config"]["max_replicas"] == 6 and "num_replicas" not in embedder
    assert "max_replicas_per_node" not in embedder  # Serve's default: no bound
    detector = next(d for d in application["deployments"] if d["name"] == "Detector")
    assert detector["max_replicas_per_node"] == 1


def test_a_local_ray_offers_the_custom_resources_the_settings_ask_for() -> None:
    """`serve run` without a cluster starts a Ray that has them: else those replicas never
    start (a local Ray offers no custom resources of its own)."""
    settings = Settings()
    settings.serving.embedder.resources = {"gpu_node": 0.5}
    settings.serving.embedder.num_replicas = 2
    settings.serving.detector.resources = {"gpu_node": 0.25}
    assert required_resources(settings) == {"gpu_node": 1.25}
    assert required_resources(Settings()) == {}
