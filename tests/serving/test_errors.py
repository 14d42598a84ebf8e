"""Refusals over both protocols: keys and roles, bad input, a full queue. Each gets its
precise status and a message a person can act on, and the service keeps answering."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import (
    FaceGalleryError,
    ImageTooLarge,
    InvalidImage,
    InvalidInput,
    NotFound,
    Overloaded,
    PermissionDenied,
    Unauthenticated,
)
from tests.helpers import encode, png_claiming
from tests.serving.conftest import IMAGE_MAX_BYTES, Served

pytestmark = pytest.mark.slow

Client = HttpClient | GrpcClient
MakeClient = Callable[[str | None], Client]


@pytest.fixture(params=["http", "grpc"])
def make_client(request: pytest.FixtureRequest, served: Served) -> Iterator[MakeClient]:
    made: list[Client] = []

    def make(key: str | None) -> Client:
        client: Client = (
            HttpClient(served.http_url, key)
            if request.param == "http"
            else GrpcClient(served.grpc_target, key)
        )
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def _every_operation(photo: bytes, gallery: str) -> dict[str, Callable[[Client], Any]]:
    return {
        "identify": lambda c: c.identify(gallery, photo),
        "identify_batch": lambda c: c.identify_batch(gallery, [photo]),
        "verify": lambda c: c.verify(gallery, "someone", photo),
        "enroll": lambda c: c.enroll(gallery, "someone", [photo]),
        "list_users": lambda c: c.list_users(gallery),
        "get_user": lambda c: c.get_user(gallery, "someone"),
        "delete_user": lambda c: c.delete_user(gallery, "someone"),
        "gallery_stats": lambda c: c.gallery_stats(gallery),
    }


def test_no_key_or_an_unknown_one_is_unauthenticated(
    make_client: MakeClient, samples: Samples
) -> None:
    photo = samples.photo("obama2.jpg").read_bytes()
    for key in (None, "fgk_0000_nope", "not-a-key"):
        with pytest.raises(Unauthenticated, match="API key"):
            make_client(key).identify("any", photo)


def test_a_key_for_another_gallery_is_refused_everywhere(
    make_client: MakeClient, served: Served, samples: Samples
) -> None:
    _, other = served.keys.create("write", ["gallery-a"])
    client = make_client(other)
    photo = samples.photo("obama2.jpg").read_bytes()
    for name, call in _every_operation(photo, "gallery-b").items():
        with pytest.raises(PermissionDenied, match="gallery-b"):
            call(client)
            pytest.fail(f"{name} was allowed")
    job = make_client(served.admin).enroll("gallery-b", "someone", [photo])
    with pytest.raises(PermissionDenied):
        client.get_job(job.job_id)


def test_a_read_key_reads_but_cannot_write(
    make_client: MakeClient, served: Served, samples: Samples
) -> None:
    _, reader = served.keys.create("read", ["readable"])
    client = make_client(reader)
    photo = samples.photo("obama2.jpg").read_bytes()
    assert client.identify("readable", photo).faces[0].decision == "unknown"
    assert client.gallery_stats("readable").users == 0
    with pytest.raises(PermissionDenied, match="'write'"):
        client.enroll("readable", "someone", [photo])
    with pytest.raises(PermissionDenied, match="'write'"):
        client.delete_user("readable", "someone")


def test_a_revoked_key_stops_working(
    make_client: MakeClient, served: Served, samples: Samples
) -> None:
    key, token = served.keys.create("read", ["revoked"])
    client = make_client(token)
    client.gallery_stats("revoked")
    served.keys.revoke(key.key_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        client.gallery_stats("revoked")


def test_bad_input_gets_the_right_error_and_the_service_keeps_answering(
    make_client: MakeClient, served: Served, samples: Samples
) -> None:
    client = make_client(served.admin)
    jpeg = samples.photo("obama2.jpg").read_bytes()
    blank = encode(np.full((240, 320, 3), 128, np.uint8))
    cases: list[tuple[Callable[[], Any], type[FaceGalleryError], str]] = [
        (lambda: client.detect(b"hello, not an image"), InvalidImage, "image"),
        (lambda: client.detect(jpeg[: len(jpeg) // 2]), InvalidImage, "image"),
        (lambda: client.detect(b"\xff\xd8" + b"\0" * IMAGE_MAX_BYTES), ImageTooLarge, "bytes"),
        (lambda: client.detect(png_claiming(30_000, 30_000)), ImageTooLarge, "pixels"),
        (lambda: client.verify("served", "obama", blank), NotFound, "not enrolled"),
        (lambda: client.identify("Not A Gallery!", jpeg), InvalidInput, "gallery id"),
        (lambda: client.identify("served", jpeg, top_k=1000), InvalidInput, "top_k"),
        (lambda: client.get_job("0" * 32), NotFound, "does not exist"),
        (lambda: client.get_job("nope"), InvalidInput, "job id"),
        (lambda: client.enroll("served", "x", []), InvalidInput, "images"),
        (lambda: client.identify_batch("served", [jpeg, b"junk"]), InvalidImage, "image 1"),
    ]
    for call, error, words in cases:
        with pytest.raises(error, match=words) as caught:
            call()
        assert "Traceback" not in caught.value.message
    assert client.detect(blank).faces == []  # zero faces is an answer, not an error
    assert client.identify("served", blank).faces == []
    assert len(client.detect(jpeg).faces) == 1  # still serving


def test_zero_faces_in_a_verify_probe(
    make_client: MakeClient, served: Served, samples: Samples
) -> None:
    client = make_client(served.admin)
    gallery = "g-" + secrets.token_hex(4)
    client.wait_job(client.enroll(gallery, "collins", [samples.photo("astronaut.png")]).job_id)
    blank = encode(np.full((240, 320, 3), 128, np.uint8))
    with pytest.raises(InvalidInput, match="no face"):
        client.verify(gallery, "collins", blank)


def test_a_keys_share_and_a_full_queue_are_overloaded_with_retry_after(
    make_client: MakeClient, served: Served
) -> None:
    """1.2 MB jobs against the 3 MB queue budget, each key holding at most half of it: a
    key's second job is over its share while the queue has room for another key's, and a
    third key finds the queue full (faster than the worker empties it)."""
    noise = np.random.default_rng(0).integers(0, 256, (580, 700, 3), dtype=np.uint8)
    image = encode(noise)
    assert 1_000_000 < len(image) < IMAGE_MAX_BYTES
    gallery = "g-" + secrets.token_hex(4)
    first, second, third = (
        make_client(served.keys.create("write", [gallery])[1]) for _ in range(3)
    )
    # The users' leases are held meanwhile, so the worker cannot finish a job during the test.
    leases = [f"{served.settings.queue.prefix}:lease:{gallery}:user-{i}" for i in range(4)]
    for lease in leases:
        served.keys.redis.set(lease, "the test", px=60_000)
    accepted = []
    try:
        accepted.append(first.enroll(gallery, "user-0", [("noise-0.png", image)]))
        with pytest.raises(Overloaded, match="this API key's share") as share:
            first.enroll(gallery, "user-1", [("noise-1.png", image)])
        accepted.append(second.enroll(gallery, "user-2", [("noise-2.png", image)]))
        with pytest.raises(Overloaded, match="is full") as full:
            third.enroll(gallery, "user-3", [("noise-3.png", image)])
    finally:
        served.keys.redis.delete(*leases)
        for job in accepted:  # the queue empties again for the tests after this one
            first.wait_job(job.job_id)
    retry = served.settings.queue.retry_after_s
    assert share.value.retry_after_s == retry and full.value.retry_after_s == retry
    assert first.gallery_stats(gallery).users == 0


def test_http_error_bodies(served: Served) -> None:
    headers = {"x-api-key": served.admin}
    url = f"{served.http_url}/v1/detect"
    for body, words in [
        (b"{not json", "not valid JSON"),
        (b'{"image": {"data": "%%%"}}', "base64"),
        (b'{"picture": {}}', "image"),
        (b"[1, 2]", "JSON object"),
    ]:
        answer = httpx.post(
            url, content=body, headers={**headers, "content-type": "application/json"}
        )
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["code"] == "INVALID_ARGUMENT" and words in error["message"], error
    no_key = httpx.post(url, json={})
    assert no_key.status_code == 401 and no_key.json()["error"]["reason"] == "unauthenticated"
    missing = httpx.get(f"{served.http_url}/v1/jobs/{'0' * 32}", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "not_found"
