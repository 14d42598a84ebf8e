"""Hostile traffic on the real stack: bodies over their bounds refused before they are read
(the gateway's and the proxy's memory do not grow), malformed forms, too many images, watch
streams that cost nothing while they wait. Each refusal is a 4xx / non-INTERNAL status with
one line, and the service keeps answering."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import grpc
import httpx
import pytest

from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import InvalidInput, Overloaded, PayloadTooLarge
from facegallery.serving.body import body_bound
from facegallery.v1 import facegallery_pb2 as pb
from facegallery.v1 import facegallery_pb2_grpc as pb_grpc
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow

MB = 1024 * 1024
RSS_GROWTH_MAX = 50 * MB


def _rss(title: str) -> int:
    """Resident memory of the Ray process whose title starts with ``title``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes()
            if command.startswith(f"ray::{title}".encode()):
                status = (proc / "status").read_text()
                return int(status.split("VmRSS:")[1].split()[0]) * 1024
        except (OSError, IndexError):
            continue
    raise AssertionError(f"no process titled ray::{title}")


GATEWAY, PROXY = "ServeReplica:facegallery:Gateway", "ProxyActor"


def _send_huge(
    url: str, path: str, total: int, chunked: bool, key: str | None
) -> tuple[int, bytes]:
    """POST ``total`` bytes as a client that keeps sending until the server answers; the
    status and body the server answered with."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    length = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    auth = f"x-api-key: {key}\r\n" if key else ""
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"{auth}{length}\r\n\r\n".encode()
    )
    answer = bytearray()
    done = threading.Event()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                answer.extend(chunk)
        except OSError:
            pass
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    piece, sent = b"0" * MB, 0
    try:
        while sent < total and not done.is_set():
            data = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            sock.sendall(data)
            sent += len(piece)
    except OSError:
        pass  # the server answered and closed: what we wanted
    done.wait(30)
    sock.close()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    return int(head.split()[1]), body


HUGE_BODIES = {  # how it is sent, with a key?, the answers that may come
    "declared, no key": (False, False, {413}),  # refused from Content-Length alone
    # refused from the headers by the gateway (401), or cut off by the proxy's count at
    # serving.max_request_bytes (413) if the proxy has read that much by then:
    "chunked, no key": (True, False, {401, 413}),
    "chunked, a key": (True, True, {413}),  # counted while it streams, refused at the bound
}


@pytest.mark.parametrize("case", list(HUGE_BODIES))
def test_a_huge_http_body_is_refused_before_it_is_held(served: Served, case: str) -> None:
    chunked, with_key, expected = HUGE_BODIES[case]
    gateway, proxy = _rss(GATEWAY), _rss(PROXY)
    path = f"/v1/galleries/{served.gallery}/users/someone/enroll"
    key = served.admin if with_key else None
    status, body = _send_huge(served.http_url, path, 300 * MB, chunked, key)
    assert status in expected, body
    reason = b"payload_too_large" if status == 413 else b"unauthenticated"
    assert reason in body and b"\n" not in body.strip()
    assert _rss(GATEWAY) - gateway < RSS_GROWTH_MAX
    assert _rss(PROXY) - proxy < RSS_GROWTH_MAX
    assert httpx.get(f"{served.http_url}/v1/health").status_code == 200


def test_a_body_over_a_single_image_calls_bound_is_413_on_http(served: Served) -> None:
    bound = body_bound(served.settings, "identify")  # a one-image call
    oversized = b"{" + b" " * bound + b"}"
    answer = httpx.post(
        f"{served.http_url}/v1/galleries/{served.gallery}/identify",
        content=oversized,
        headers={"x-api-key": served.admin, "content-type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"]["reason"] == "payload_too_large"


def test_an_unauthenticated_huge_grpc_message_is_resource_exhausted(served: Served) -> None:
    gateway, proxy = _rss(GATEWAY), _rss(PROXY)
    huge = served.settings.serving.max_request_bytes + MB
    with grpc.insecure_channel(served.grpc_target) as channel:
        stub = pb_grpc.FaceGalleryServiceStub(channel)  # type: ignore[no-untyped-call]
        request = pb.EnrollRequest(
            gallery=served.gallery, user_id="someone", images=[pb.Image(data=b"0" * huge)]
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.Enroll(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _rss(GATEWAY) - gateway < RSS_GROWTH_MAX
    assert _rss(PROXY) - proxy < 2 * RSS_GROWTH_MAX  # the proxy may hold one bounded buffer


def test_a_grpc_message_over_its_calls_bound_is_refused_with_a_key(served: Served) -> None:
    bound = body_bound(served.settings, "identify")  # a one-image call
    with closing(GrpcClient(served.grpc_target, served.admin)) as client:
        with pytest.raises(PayloadTooLarge, match="at most"):
            client.identify(served.gallery, b"0" * bound)
        assert client.gallery_stats(served.gallery).gallery == served.gallery


BROKEN_FORMS = {
    "no boundary": ("multipart/form-data", b"image=x"),
    "not a form": ("multipart/form-data; boundary=abc", b"this is not multipart"),
    "cut short": ("multipart/form-data; boundary=abc", b"--abc\r\nContent-Disposition: form-d"),
}


@pytest.mark.parametrize("form", list(BROKEN_FORMS))
def test_malformed_multipart_is_400_on_every_image_operation(served: Served, form: str) -> None:
    content_type, body = BROKEN_FORMS[form]
    g = served.gallery
    for path in [
        "/v1/detect",
        f"/v1/galleries/{g}/identify",
        f"/v1/galleries/{g}/identify-batch",
        f"/v1/galleries/{g}/users/someone/verify",
        f"/v1/galleries/{g}/users/someone/enroll",
    ]:
        answer = httpx.post(
            served.http_url + path,
            content=body,
            headers={"x-api-key": served.admin, "content-type": content_type},
        )
        assert answer.status_code == 400, (path, answer.text)
        error = answer.json()["error"]
        assert error["code"] == "INVALID_ARGUMENT" and "\n" not in error["message"]


def test_too_many_images_are_refused_before_any_is_decoded(served: Served) -> None:
    limit = served.settings.serving.max_images_per_request
    not_images = ["not base64 at all!"] * (limit + 1)  # decoding them would say so instead
    clients = (
        HttpClient(served.http_url, served.admin),
        GrpcClient(served.grpc_target, served.admin),
    )
    for client in clients:
        with closing(client), pytest.raises(InvalidInput, match=f"at most {limit} images"):
            client.identify_batch(served.gallery, [b"x"] * (limit + 1))
    answer = httpx.post(
        f"{served.http_url}/v1/galleries/{served.gallery}/identify-batch",
        json={"images": [{"data": d} for d in not_images]},
        headers={"x-api-key": served.admin},
    )
    assert answer.status_code == 400 and f"at most {limit} images" in answer.text


@pytest.fixture
def unfinished_job(served: Served) -> Iterator[str]:
    """A job that stays queued: its hash exists, but no stream entry hands it to a worker."""
    job_id = uuid.uuid4().hex
    key = f"{served.settings.queue.prefix}:job:{job_id}"
    served.keys.redis.hset(
        key,
        mapping={
            "job_id": job_id,
            "gallery": served.gallery,
            "user_id": "waiting",
            "status": "queued",
            "images": '["a.jpg"]',
            "attempts": "0",
            "created_at": repr(time.time()),
        },
    )
    yield job_id
    served.keys.redis.delete(key)


def test_a_hundred_watches_cost_nothing_while_they_wait(
    served: Served, unfinished_job: str
) -> None:
    per_key = served.settings.serving.max_watches_per_key
    keys = [served.keys.create("read", [served.gallery])[1] for _ in range(-(-100 // per_key))]
    url = f"{served.http_url}/v1/jobs/{unfinished_job}/watch"
    client = httpx.Client(timeout=30)
    streams = []
    for n in range(100):
        stream = client.stream("GET", url, headers={"x-api-key": keys[n % len(keys)]})
        answer = stream.__enter__()
        assert answer.status_code == 200
        assert b'"queued"' in next(answer.iter_lines()).encode()
        streams.append(stream)
    with closing(HttpClient(served.http_url, served.admin)) as caller:
        start = time.monotonic()
        caller.gallery_stats(served.gallery)
        assert time.monotonic() - start < 1.0  # 100 open watches hold no thread
        for stream in streams:
            stream.__exit__(None, None, None)
        client.close()
        start = time.monotonic()
        caller.gallery_stats(served.gallery)
        assert time.monotonic() - start < 1.0


def test_watches_per_key_are_capped_and_a_revoked_key_stops_its_watch(
    served: Served, unfinished_job: str
) -> None:
    key, token = served.keys.create("read", [served.gallery])
    per_key = served.settings.serving.max_watches_per_key
    url = f"{served.http_url}/v1/jobs/{unfinished_job}/watch"
    with httpx.Client(timeout=30) as client:
        streams = [client.stream("GET", url, headers={"x-api-key": token}) for _ in range(per_key)]
        answers = [s.__enter__() for s in streams]
        assert all(a.status_code == 200 for a in answers)
        grpc_client = GrpcClient(served.grpc_target, token)
        with closing(grpc_client), pytest.raises(Overloaded, match=f"already watches {per_key}"):
            next(iter(grpc_client.watch_job(unfinished_job)))
        refused = client.get(url, headers={"x-api-key": token})
        assert refused.status_code == 429 and refused.headers["retry-after"]
        served.keys.revoke(key.key_id)
        lines = answers[0].iter_lines()
        next(lines)  # the first state
        last = next(lines)
        assert "unauthenticated" in last and "revoked" in last
        for stream in streams:
            stream.__exit__(None, None, None)
