"""A camera fleet against the served API, open loop: N cameras each send a 640x480 JPEG frame
(0-3 faces) every 1/fps seconds, whether or not the last one was answered, each call with a
deadline, over gRPC and over HTTP. First the capacity is measured (the highest offered rate
whose frames are answered OK within the deadline, 99% of them or more), then 0.5x, 1x, 2x
and 4x of it are offered for a fixed time each, then 0.5x again to time the recovery. For
each: offered, goodput (answered OK within the deadline, per second), refused (with the time
to refuse), deadline exceeded, p50/p95/p99 of the OK answers, mean batch sizes. The same run
with the admission policy off (``serving.admission.enabled: false``: every call let in, as
before the policy; deadlines are still honoured) beside it, at the same offered rates.

    .venv/bin/python benchmarks/bench_fleet.py --json benchmarks/results/fleet.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np

from bench_serving import batching, frames, scrape, scratch_servers
from facegallery.assets.samples import fetch_samples
from facegallery.client import HttpClient
from facegallery.core.config import (
    Settings,
    load_settings,
)
from facegallery.serving.keys import KeyStore
from facegallery.v1 import facegallery_pb2 as pb
from facegallery.v1 import facegallery_pb2_grpc as pb_grpc
from facegallery.wire.metadata import API_KEY_HEADER, TIMEOUT_HEADER
from report import emit

GALLERY = "fleet"
FPS = 2.0  # each camera's frame rate; the number of cameras sets the offered rate


@dataclass(frozen=True)
class Answer:
    sent: float  # seconds since the level began
    code: str  # OK, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ...
    seconds: float


class Fleet:
    """Sends frames over one protocol; every call has the deadline."""

    def __init__(self, protocol: str, url: str, target: str, token: str, deadline_s: float):
        self.protocol = protocol
        self.deadline_s = deadline_s
        self.url, self.target, self.token = url, target, token

    async def __aenter__(self) -> Fleet:
        self.channel = grpc.aio.insecure_channel(self.target)
        self.stub = pb_grpc.FaceGalleryServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.http = httpx.AsyncClient(
            base_url=self.url, limits=httpx.Limits(max_connections=512), timeout=None
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.channel.close()
        await self.http.aclose()

    async def call(self, frame: bytes) -> tuple[str, float]:
        start = time.perf_counter()
        if self.protocol == "grpc":
            request = pb.IdentifyRequest(gallery=GALLERY, image=pb.Image(data=frame, name="f"))
            try:
                await self.stub.Identify(
                    request, metadata=[(API_KEY_HEADER, self.token)], timeout=self.deadline_s
                )
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
        else:
            try:
                answer = await self.http.post(
                    f"/v1/galleries/{GALLERY}/identify",
                    files={"image": ("f.jpg", frame)},
                    headers={API_KEY_HEADER: self.token, TIMEOUT_HEADER: str(self.deadline_s)},
                    timeout=self.deadline_s + 1.0,
                )
                code = _HTTP_CODES.get(answer.status_code, str(answer.status_code))
            except httpx.TimeoutException:
                code = "DEADLINE_EXCEEDED"
        return code, time.perf_counter() - start

    async def offer(self, rate: float, seconds: float, batch: list[bytes]) -> list[Answer]:
        """Open loop: ``rate`` frames/s from cameras at FPS each, for ``seconds``."""
        cameras = max(1, round(rate / FPS))
        period = cameras / rate
        begin = time.perf_counter()
        tasks: list[asyncio.Task[Answer]] = []

        async def one(sent: float, frame: bytes) -> Answer:
            code, took = await self.call(frame)
            return Answer(sent, code, took)

        async def camera(index: int) -> None:
            k = 0
            while (at := index * period / cameras + k * period) < seconds:
                await asyncio.sleep(max(0.0, begin + at - time.perf_counter()))
                frame = batch[(index + k) % len(batch)]
                tasks.append(asyncio.create_task(one(at, frame)))
                k += 1

        await asyncio.gather(*(camera(i) for i in range(cameras)))
        return list(await asyncio.gather(*tasks))


_HTTP_CODES = {200: "OK", 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def summary(
    answers: list[Answer], rate: float, seconds: float, deadline_s: float
) -> dict[str, Any]:
    ok = np.array([a.seconds for a in answers if a.code == "OK" and a.seconds <= deadline_s])
    refused = np.array([a.seconds for a in answers if a.code == "RESOURCE_EXHAUSTED"])
    codes = Counter(a.code for a in answers)

    def pct(values: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(values, q)) * 1000, 1) if len(values) else None

    return {
        "offered_per_s": round(rate, 2),
        "sent": len(answers),
        "goodput_per_s": round(len(ok) / seconds, 2),
        "ok_within_deadline": len(ok),
        "refused": int(codes["RESOURCE_EXHAUSTED"]),
        "refused_p99_ms": pct(refused, 99),
        "deadline_exceeded": int(codes["DEADLINE_EXCEEDED"]),
        "other": {
            c: n
            for c, n in codes.items()
            if c not in ("OK", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")
        },
        "ok_p50_ms": pct(ok, 50),
        "ok_p95_ms": pct(ok, 95),
        "ok_p99_ms": pct(ok, 99),
    }


async def capacity(fleet: Fleet, batch: list[bytes], probe_s: float, start: float) -> float:
    """The highest offered rate answered OK within the deadline for 99% of its frames."""
    rate, best = start, 0.0
    while True:
        answers = await fleet.offer(rate, probe_s, batch)
        result = summary(answers, rate, probe_s, fleet.deadline_s)
        print(fleet.protocol, "capacity probe", result, flush=True)
        if result["ok_within_deadline"] < 0.99 * len(answers):
            return best or rate
        best, rate = rate, rate * 1.25


def per_second(answers: list[Answer], deadline_s: float) -> list[dict[str, Any]]:
    """Each second of a level (by when frames were sent): frames, OK within the deadline,
    and the median latency of those (ms)."""
    seconds = int(max((a.sent for a in answers), default=0)) + 1
    trace = []
    for second in range(seconds):
        these = [a for a in answers if second <= a.sent < second + 1]
        ok = [a.seconds for a in these if a.code == "OK" and a.seconds <= deadline_s]
        p50 = round(float(np.median(ok)) * 1000, 1) if ok else None
        trace.append({"second": second, "sent": len(these), "ok": len(ok), "ok_p50_ms": p50})
    return trace


def recovery_s(trace: list[dict[str, Any]], normal_p50_ms: float) -> float | None:
    """Seconds into the level after which every second's frames are all OK within the
    deadline and their median latency is back within 1.5x of the normal (0.5x) median."""
    good = [
        s["sent"] > 0 and s["ok"] == s["sent"] and s["ok_p50_ms"] <= 1.5 * normal_p50_ms
        for s in trace
    ]
    for second in range(len(good)):
        if all(good[second:]):
            return float(second)
    return None


async def levels(
    fleet: Fleet, metrics_dir: Path, batch: list[bytes], cap: float, seconds: float
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for factor in (0.5, 1.0, 2.0, 4.0):
        before = scrape(metrics_dir)
        answers = await fleet.offer(cap * factor, seconds, batch)
        result = summary(answers, cap * factor, seconds, fleet.deadline_s)
        result.update(batching(before, scrape(metrics_dir), seconds))
        results[f"{factor:g}x"] = result
        print(fleet.protocol, f"{factor:g}x", result, flush=True)
    after = await fleet.offer(cap * 0.5, seconds, batch)  # right after the 4x burst
    trace = per_second(after, fleet.deadline_s)
    results["recovery_after_4x_s"] = recovery_s(trace, results["0.5x"]["ok_p50_ms"] or 0.0)
    results["after_4x_per_second"] = trace
    return results


async def run_policy(
    url: str,
    target: str,
    token: str,
    batch: list[bytes],
    args: argparse.Namespace,
    capacities: dict[str, float] | None,
    metrics_dir: Path,
) -> tuple[dict[str, Any], dict[str, float]]:
    out: dict[str, Any] = {}
    measured: dict[str, float] = {}
    for protocol in ("grpc", "http"):
        async with Fleet(protocol, url, target, token, args.deadline_s) as fleet:
            await fleet.offer(2.0, 3.0, batch)  # warm the clients' connections
            cap = (
                capacities[protocol]
                if capacities
                else await capacity(fleet, batch, args.probe_s, args.start_rate)
            )
            measured[protocol] = cap
            out[protocol] = {
                "capacity_per_s": round(cap, 2),
                **await levels(fleet, metrics_dir, batch, cap, args.seconds),
            }
    return out, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Per load level.")
    parser.add_argument("--probe-s", type=float, default=8.0, help="Per capacity probe.")
    parser.add_argument("--start-rate", type=float, default=2.0, help="First probe, frames/s.")
    parser.add_argument("--deadline-s", type=float, default=2.0, help="Every call's deadline.")
    args = parser.parse_args()

    import ray
    from ray import serve

    from facegallery.serving.app import ray_env, run_app

    base = load_settings()
    samples = fetch_samples(base.samples_dir.expanduser(), base.models.wheelhouse)
    batch = frames(samples)
    results: dict[str, Any] = {}
    with scratch_servers("bench-fleet-") as (overrides, redis_url):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        capacities = None
        for policy in ("on", "off"):
            # A Ray of its own per policy: the proxies read their admission settings from
            # Ray's environment when Ray starts (serving.proxy).
            overrides["serving"]["admission"] = {"enabled": policy == "on"}
            settings = Settings(**overrides)
            os.environ.update(ray_env(settings))
            ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
            try:
                run_app(settings, overrides)
                _, token = KeyStore(redis_url, settings.queue.prefix).create("admin", [])
                url = f"http://127.0.0.1:{settings.serving.http_port}"
                http = HttpClient(url, token)
                for portrait in ("obama.jpg", "astronaut.png"):
                    http.wait_job(http.enroll(GALLERY, portrait, [samples.photo(portrait)]).job_id)
                target = f"127.0.0.1:{settings.serving.grpc_port}"
                results[f"policy_{policy}"], capacities = asyncio.run(
                    run_policy(
                        url, target, token, batch, args, capacities, settings.serving.metrics_dir
                    )
                )
            finally:
                serve.shutdown()  # type: ignore[no-untyped-call]
                ray.shutdown()
    emit(
        {
            "benchmark": "a camera fleet, open loop, with deadlines: goodput under overload",
            "frames": {"count": len(batch), "faces": "0, 1, 2, 3 (640x480 JPEG)"},
            "deadline_s": args.deadline_s,
            "camera_fps": FPS,
            "seconds_per_level": args.seconds,
            "capacity_rule": "highest offered rate with >= 99% of frames OK within the deadline "
            "(probes of --probe-s, x1.25 apart, policy on); the policy-off run reuses it",
            **results,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
