"""The "accurate" pack served: a second Ray Serve application beside the session's (its own
route prefix, gRPC application name, queue and keys) whose Detector cuts each face's sheet
(aligned crop and dlib's chip) and whose Embedder batches both networks; enrolled and
identified over both protocols with the project's clients."""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.config import Settings
from facegallery.serving.keys import KeyStore
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow

APP = "accurate"


@dataclass(frozen=True)
class AccurateApp:
    http_url: str
    grpc_target: str
    admin: str


@pytest.fixture(scope="module")
def accurate_app(served: Served, accurate_settings: Settings) -> Iterator[AccurateApp]:
    from ray import serve

    from facegallery.serving.app import build

    overrides = copy.deepcopy(served.overrides)
    overrides["models"]["pack"] = APP
    overrides["queue"]["prefix"] = "accurate-" + secrets.token_hex(4)
    serving = overrides["serving"]
    serving["app_name"] = APP
    for deployment in ("gateway", "detector", "embedder", "workers"):
        serving[deployment] = {**serving[deployment], "num_cpus": 0.1}  # beside the other app
    serve.run(build({"settings": overrides}), name=APP, route_prefix=f"/{APP}")
    try:
        keys = KeyStore(overrides["queue"]["url"], overrides["queue"]["prefix"])
        _, admin = keys.create("admin", [], "tests")
        yield AccurateApp(f"{served.http_url}/{APP}", served.grpc_target, admin)
    finally:
        serve.delete(APP)


@pytest.fixture(params=["http", "grpc"])
def client(
    request: pytest.FixtureRequest, accurate_app: AccurateApp
) -> Iterator[HttpClient | GrpcClient]:
    made: HttpClient | GrpcClient
    if request.param == "http":
        made = HttpClient(accurate_app.http_url, accurate_app.admin)
    else:
        made = GrpcClient(accurate_app.grpc_target, accurate_app.admin)
        made.metadata.append(("application", APP))  # Serve routes gRPC by application
    yield made
    made.close()


def test_the_accurate_pack_enrolls_and_identifies(
    client: HttpClient | GrpcClient, samples: Samples
) -> None:
    gallery = "acc-" + secrets.token_hex(4)
    job = client.enroll(gallery, "obama", [samples.photo("obama.jpg")])
    done = client.wait_job(job.job_id)
    assert done.status == "done" and [o.status for o in done.outcomes] == ["enrolled"], done
    found = client.identify(gallery, samples.photo("obama2.jpg"))
    assert [f.decision for f in found.faces] == ["obama"]
    assert found.model_id.startswith("fused-sface-dlib-")
    stranger = client.identify(gallery, samples.photo("biden.jpg"))
    assert [f.decision for f in stranger.faces] == ["unknown"]
    assert client.verify(gallery, "obama", samples.photo("obama2.jpg")).match
    # Several faces in one call: the Embedder batches both networks over every sheet.
    group = client.identify_batch(gallery, [samples.photo("group.jpg")] * 2)
    assert len(group.results[0].faces) == len(group.results[1].faces) >= 5
    assert all(f.decision == "unknown" for image in group.results for f in image.faces)
