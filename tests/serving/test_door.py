"""The proxy's door weighs exactly the single-image model calls: its route and method
tables match the gateway's routes and the proto's service (a route added to one and not the
other would be admitted only by the gateway, or not at all)."""

from __future__ import annotations

import re

from facegallery.serving.door import GRPC_METHODS, http_operation
from facegallery.serving.gateway import MODEL_OPERATIONS, http
from facegallery.v1 import facegallery_pb2 as pb

SINGLE_IMAGE = MODEL_OPERATIONS - {"identify_batch"}


def test_the_http_routes_weighed_are_the_single_image_model_calls() -> None:
    posts = {
        path: methods["post"]["operationId"].split("_v1_")[0]
        for path, methods in http.openapi()["paths"].items()
        if "post" in methods
    }
    assert set(posts.values()) >= SINGLE_IMAGE
    for path, operation in posts.items():
        scope = {"type": "http", "method": "POST", "path": re.sub(r"\{[^}]+\}", "x", path)}
        assert http_operation(scope) == (operation if operation in SINGLE_IMAGE else None)
        assert http_operation({**scope, "method": "GET"}) is None


def test_the_grpc_methods_weighed_are_the_single_image_model_calls() -> None:
    service = pb.DESCRIPTOR.services_by_name["FaceGalleryService"]
    weighed = {
        f"/{service.full_name}/{m.name}"
        for m in service.methods
        if re.sub(r"(?<!^)([A-Z])", r"_\1", m.name).lower() in SINGLE_IMAGE
    }
    assert weighed == set(GRPC_METHODS)
    assert set(GRPC_METHODS.values()) == SINGLE_IMAGE
