"""Overload on the real served app: deadlines travel with the work and dropped work is
counted where it was dropped, a caller who leaves has its work dropped, a burst beyond
capacity is refused at the door with a Retry-After, and identify keeps being served while a
bulk enrollment runs."""

from __future__ import annotations

import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import pytest

from facegallery.assets.samples import Samples
from facegallery.client import GrpcClient, HttpClient
from facegallery.core.errors import DeadlineExceeded, Overloaded
from tests.helpers import read_bgr
from tests.serving.conftest import Served

pytestmark = pytest.mark.slow


def shed(served: Served) -> dict[tuple[str, str], float]:
    """facegallery_shed_total by (reason, stage), from the node's exporter."""
    text = httpx.get(served.metrics_url).text
    found = re.findall(r'facegallery_shed_total\{reason="(\w+)",stage="(\w+)"\} (\S+)', text)
    return {(reason, stage): float(value) for reason, stage, value in found}


def _grown(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> set[tuple[str, str]]:
    return {k for k, v in after.items() if v > before.get(k, 0.0)}


def test_a_call_past_its_deadline_is_answered_504_and_never_reaches_the_models(
    served: Served, samples: Samples
) -> None:
    before = shed(served)
    answer = httpx.post(
        f"{served.http_url}/v1/galleries/{served.gallery}/identify",
        files={"image": samples.photo("obama2.jpg").read_bytes()},
        headers={"x-api-key": served.admin, "x-request-timeout": "0.001"},
        timeout=10,
    )
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["reason"] == "deadline_exceeded"
    assert ("expired", "gateway") in _grown(before, shed(served))  # dropped before any model
    bad = httpx.post(
        f"{served.http_url}/v1/detect",
        files={"image": b"x"},
        headers={"x-api-key": served.admin, "x-request-timeout": "soon"},
    )
    assert bad.status_code == 400 and "x-request-timeout" in bad.json()["error"]["message"]


def test_a_grpc_callers_own_deadline_travels_with_the_work(
    served: Served, samples: Samples
) -> None:
    """Frames the service cannot finish in 0.3 s: the caller gets DEADLINE_EXCEEDED, and the
    service itself dropped the rest of the work (it knew the deadline: the proxy carried it)."""
    before = shed(served)
    client = GrpcClient(served.grpc_target, served.admin, timeout_s=0.3, attempts=1)
    frames = [samples.photo("group.jpg")] * 16
    with pytest.raises(DeadlineExceeded):
        client.identify_batch(served.gallery, frames)
    deadline = time.monotonic() + 10
    while not {r for r, _ in _grown(before, shed(served))} & {"expired"}:
        assert time.monotonic() < deadline, shed(served)
        time.sleep(0.2)


def test_a_caller_who_leaves_has_its_work_dropped(served: Served, samples: Samples) -> None:
    """Callers who give up after 0.3 s on frames that take longer: what was still queued for
    the models is dropped (counted as cancelled), not run for nobody."""
    before = shed(served)
    frames = [("f.jpg", samples.photo("group.jpg").read_bytes())] * 16
    left = 0
    for _ in range(3):
        try:
            httpx.post(
                f"{served.http_url}/v1/galleries/{served.gallery}/identify-batch",
                files=[("images", f) for f in frames],
                headers={"x-api-key": served.admin},
                timeout=0.3,
            )
        except httpx.TimeoutException:  # the client leaves
            left += 1
        time.sleep(0.5)
    assert left >= 1
    deadline = time.monotonic() + 15
    while not {r for r, _ in _grown(before, shed(served))} & {"cancelled"}:
        assert time.monotonic() < deadline, shed(served)
        time.sleep(0.2)


def test_a_burst_beyond_capacity_is_refused_fast_with_retry_after(
    served: Served, samples: Samples
) -> None:
    """Over HTTP: refused with 429 and a Retry-After, faster than the answers, in Serve's
    proxy (before any gateway replica sees the call), and the service keeps serving."""
    before = shed(served)
    image = samples.photo("group.jpg").read_bytes()
    answers: list[tuple[int, float, str | None]] = []

    def call(_: int) -> None:
        start = time.perf_counter()
        answer = httpx.post(
            f"{served.http_url}/v1/galleries/{served.gallery}/identify",
            files={"image": image},
            headers={"x-api-key": served.admin, "x-request-timeout": "1.0"},
            timeout=10,
        )
        answers.append(
            (answer.status_code, time.perf_counter() - start, answer.headers.get("retry-after"))
        )

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(call, range(64)))
    refused = [a for a in answers if a[0] == 429]
    assert refused, sorted({a[0] for a in answers})
    assert all(retry is not None and int(retry) >= 1 for _, _, retry in refused)
    assert {code for code, _, _ in answers} <= {200, 429, 504}
    refused_times = sorted(seconds for _, seconds, _ in refused)
    ok_times = sorted(seconds for code, seconds, _ in answers if code == 200)
    median_refused = refused_times[len(refused_times) // 2]
    assert median_refused < 1.0  # refused at the door, not after waiting out the deadline
    assert not ok_times or median_refused < ok_times[len(ok_times) // 2]
    assert ("admission", "proxy") in _grown(before, shed(served))
    grpc = GrpcClient(served.grpc_target, served.admin, timeout_s=2.0, attempts=1)
    grpc.identify(served.gallery, samples.photo("obama2.jpg"))  # and it keeps serving


def test_a_grpc_burst_is_refused_in_the_proxy_with_retry_after(
    served: Served, samples: Samples
) -> None:
    """The same burst over gRPC: RESOURCE_EXHAUSTED with a Retry-After the client reads,
    from the proxy's door (`serving.door` wraps Serve's gRPC handlers: a Ray upgrade must
    keep this green), counted with the requests, and the service keeps serving."""
    before, refused_before = shed(served), refused_grpc_identify(served)
    client = GrpcClient(served.grpc_target, served.admin, timeout_s=1.0, attempts=1)
    photo = samples.photo("group.jpg")
    retry_afters: list[int] = []

    def call(_: int) -> None:
        try:
            client.identify(served.gallery, photo)
        except Overloaded as refusal:
            retry_afters.append(refusal.retry_after_s or 0)
        except DeadlineExceeded:
            pass

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(call, range(64)))
    assert retry_afters and min(retry_afters) >= 1, retry_afters
    grown = shed(served).get(("admission", "proxy"), 0.0) - before.get(("admission", "proxy"), 0)
    assert grown >= 1
    # Every refusal the proxy made is a RESOURCE_EXHAUSTED identify in the request counts.
    assert refused_grpc_identify(served) - refused_before >= grown
    patient = GrpcClient(served.grpc_target, served.admin, timeout_s=5.0, attempts=1)
    patient.identify(served.gallery, samples.photo("obama2.jpg"))  # and it keeps serving


def refused_grpc_identify(served: Served) -> float:
    """facegallery_requests_total of gRPC identify calls answered RESOURCE_EXHAUSTED."""
    text = httpx.get(served.metrics_url).text
    wanted = ('operation="identify"', 'protocol="grpc"', 'code="RESOURCE_EXHAUSTED"')
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("facegallery_requests_total{") and all(w in line for w in wanted)
    )


def _orl_photos(samples: Samples, person: int) -> list[tuple[str, bytes]]:
    """A person's eight ORL photos as PNG (small: the test app's queue holds 3 MB)."""
    photos = []
    for shot in range(1, 9):
        image = read_bgr(samples.orl / f"s{person}" / f"{shot}.pgm")
        photos.append((f"{shot}.png", cv2.imencode(".png", image)[1].tobytes()))
    return photos


def test_identify_keeps_being_served_while_a_bulk_enrollment_runs(
    served: Served, samples: Samples
) -> None:
    gallery = "bulk-" + secrets.token_hex(4)
    http = HttpClient(served.http_url, served.admin)
    jobs = [http.enroll(gallery, f"orl-{n}", _orl_photos(samples, n)) for n in range(1, 7)]
    fast = GrpcClient(served.grpc_target, served.admin, timeout_s=3.0, attempts=1)
    served_while_busy = 0
    while not all(http.get_job(j.job_id).finished for j in jobs):
        fast.identify(served.gallery, samples.photo("obama2.jpg"))  # within its 3 s deadline
        served_while_busy += 1
    assert served_while_busy >= 3
    assert all(http.wait_job(j.job_id).status == "done" for j in jobs)  # and bulk finished
