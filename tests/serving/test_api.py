"""The served API end to end over both protocols: the real Ray Serve app on local Ray, the
managed Milvus server, redis-server, and the project's HTTP and gRPC clients."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import InvalidInput
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow

Client = HttpClient | GrpcClient


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, served: Served) -> Iterator[Client]:
    made: Client = (
        HttpClient(served.http_url, served.admin)
        if request.param == "http"
        else GrpcClient(served.grpc_target, served.admin)
    )
    yield made
    made.close()


def new_gallery() -> str:
    return "g-" + secrets.token_hex(4)


def test_enroll_identify_verify_delete(client: Client, samples: Samples) -> None:
    gallery = new_gallery()
    job = client.enroll(gallery, "obama", [samples.photo("obama.jpg")], idempotency_key="o-1")
    assert job.status == "queued" and job.images == ["obama.jpg"]
    done = client.wait_job(job.job_id)
    assert done.status == "done", done
    assert [o.status for o in done.outcomes] == ["enrolled"] and done.templates == 1

    again = client.enroll(gallery, "obama", [samples.photo("obama.jpg")], idempotency_key="o-1")
    assert again.job_id == job.job_id  # a retried upload is the same job, applied once

    found = client.identify(gallery, samples.photo("obama2.jpg"))
    assert [f.decision for f in found.faces] == ["obama"]
    assert found.faces[0].candidates[0].score >= found.threshold

    assert client.verify(gallery, "obama", samples.photo("obama2.jpg")).match
    assert not client.verify(gallery, "obama", samples.photo("grace_hopper.jpg")).match

    assert client.list_users(gallery).user_ids == ["obama"]
    assert len(client.get_user(gallery, "obama").templates) == 1
    stats = client.gallery_stats(gallery)
    assert (stats.users, stats.templates) == (1, 1)

    assert client.delete_user(gallery, "obama") == 1
    after = client.identify(gallery, samples.photo("obama2.jpg"))
    assert [f.decision for f in after.faces] == ["unknown"]
    assert client.gallery_stats(gallery).users == 0


def test_every_answer_says_its_operating_point(client: Client, samples: Samples) -> None:
    gallery = new_gallery()
    assert client.wait_job(client.enroll(gallery, "obama", [samples.photo("obama.jpg")]).job_id)
    probe = samples.photo("obama2.jpg")
    found = client.identify(gallery, probe)
    point = found.operating_point
    assert (point.method, point.target_fpir) == ("far_extended", 0.01)  # one user: too few
    assert (point.gallery_users, point.gallery_templates) == (1, 1)
    assert found.threshold == point.threshold and found.faces[0].decision == "obama"

    strict = client.identify(gallery, probe, threshold=0.99)
    assert (strict.operating_point.method, strict.threshold) == ("explicit", 0.99)
    assert strict.operating_point.target_fpir is None
    assert strict.faces[0].decision == "unknown"
    looser = client.identify(gallery, probe, target_fpir=0.1)
    assert looser.operating_point.target_fpir == 0.1 and looser.threshold < found.threshold
    batch = client.identify_batch(gallery, [probe, probe], target_fpir=0.1)
    assert [r.operating_point for r in batch.results] == [looser.operating_point] * 2
    with pytest.raises(InvalidInput, match="target_fpir"):
        client.identify(gallery, probe, target_fpir=0.5)


def test_both_protocols_give_the_same_answers(served: Served, samples: Samples) -> None:
    gallery = new_gallery()
    http = HttpClient(served.http_url, served.admin)
    grpc = GrpcClient(served.grpc_target, served.admin)
    job = http.enroll(gallery, "obama", [samples.photo("obama.jpg"), samples.photo("obama3.jpg")])
    assert grpc.wait_job(job.job_id) == http.wait_job(job.job_id)
    group = samples.photo("group.jpg")  # six faces
    assert grpc.detect(group) == http.detect(group)
    assert len(http.detect(group).faces) == 6
    assert grpc.identify(gallery, group) == http.identify(gallery, group)
    frames = [samples.photo("obama2.jpg"), samples.photo("biden.jpg"), group]
    batch = http.identify_batch(gallery, frames)
    assert grpc.identify_batch(gallery, frames) == batch
    assert [r.faces[0].decision for r in batch.results[:2]] == ["obama", "unknown"]
    probe = samples.photo("obama2.jpg")
    assert grpc.verify(gallery, "obama", probe) == http.verify(gallery, "obama", probe)
    assert grpc.get_user(gallery, "obama") == http.get_user(gallery, "obama")
    assert grpc.list_users(gallery) == http.list_users(gallery)
    assert grpc.gallery_stats(gallery) == http.gallery_stats(gallery)


def test_more_faces_than_an_embedder_batch(
    client: Client, served: Served, samples: Samples
) -> None:
    """Seven group photos hold 35 faces that pass the gate, more than one Embedder batch
    (32): the call is split, not refused."""
    group = samples.photo("group.jpg")
    answer = client.identify_batch(new_gallery(), [group] * 7)
    searched = sum(f.searched for r in answer.results for f in r.faces)
    assert searched > served.settings.serving.embedder.max_batch_size
    assert all(r == answer.results[0] for r in answer.results)


def test_enrollment_outcomes_per_image(client: Client, samples: Samples) -> None:
    """One job, three images: enrolled, no face, several faces and no face index."""
    gallery = new_gallery()
    blank = _gray_png()
    job = client.enroll(
        gallery,
        "obama",
        [samples.photo("obama.jpg"), ("blank.png", blank), samples.photo("group.jpg")],
    )
    done = client.wait_job(job.job_id)
    assert [(o.status, o.reason) for o in done.outcomes] == [
        ("enrolled", None),
        ("rejected", "no_face"),
        ("rejected", "multiple_faces"),
    ]


def test_watch_job_streams_until_done(client: Client, samples: Samples) -> None:
    job = client.enroll(new_gallery(), "collins", [samples.photo("astronaut.png")])
    states = [j.status for j in client.watch_job(job.job_id)]
    assert states[-1] == "done" and set(states) <= {"queued", "running", "done"}


def test_paging_users(client: Client, samples: Samples) -> None:
    gallery = new_gallery()
    jobs = [
        client.enroll(gallery, user, [samples.photo(photo)])
        for user, photo in [("a-hopper", "grace_hopper.jpg"), ("b-collins", "astronaut.png")]
    ]
    assert all(client.wait_job(j.job_id).status == "done" for j in jobs)
    first = client.list_users(gallery, page_size=1)
    assert first.user_ids == ["a-hopper"] and first.next_page_token == "a-hopper"
    second = client.list_users(gallery, page_token=first.next_page_token, page_size=1)
    assert second.user_ids == ["b-collins"]


def test_json_with_base64_images_works_like_multipart(served: Served, samples: Samples) -> None:
    import base64

    data = samples.photo("obama2.jpg").read_bytes()
    body = {"image": {"data": base64.b64encode(data).decode()}}
    answer = httpx.post(
        f"{served.http_url}/v1/detect", json=body, headers={"x-api-key": served.admin}
    )
    assert answer.status_code == 200
    assert answer.json() == HttpClient(served.http_url, served.admin).detect(data).model_dump()


def test_openapi_document_and_docs(served: Served) -> None:
    spec = httpx.get(f"{served.http_url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/detect", "/v1/galleries/{gallery}/identify", "/v1/jobs/{job_id}"} <= paths
    enroll = spec["paths"]["/v1/galleries/{gallery}/users/{user_id}/enroll"]["post"]
    assert "202" in enroll["responses"] and "429" in enroll["responses"]
    assert httpx.get(f"{served.http_url}/docs").status_code == 200


def _gray_png() -> bytes:
    import numpy as np

    from tests.helpers import encode

    return encode(np.full((240, 320, 3), 128, np.uint8))
