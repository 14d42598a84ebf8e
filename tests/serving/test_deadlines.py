"""A call's deadline as the transports carry it: only positive finite values, never past
serving.max_deadline_s, and each transport reads only its own carrier."""

from __future__ import annotations

import time

import pytest

from facegallery.core.config import ServingSettings
from facegallery.core.errors import InvalidInput
from facegallery.serving.deadlines import grpc_deadline, http_deadline

SERVING = ServingSettings(deadline_s=10.0, max_deadline_s=60.0)


def test_http_reads_its_header_and_bounds_it() -> None:
    now = time.time()
    assert http_deadline({}, SERVING) == pytest.approx(now + 10.0, abs=1)
    assert http_deadline({"x-request-timeout": "2.5"}, SERVING) == pytest.approx(now + 2.5, abs=1)
    assert http_deadline({"x-request-timeout": "1e9"}, SERVING) == pytest.approx(now + 60, abs=1)
    far = str(now + 1e6)  # the gRPC carrier's name is not read from an HTTP caller
    assert http_deadline({"facegallery-deadline": far}, SERVING) == pytest.approx(now + 10, abs=1)


@pytest.mark.parametrize("bad", ["soon", "nan", "inf", "-1", "0"])
def test_what_is_not_a_positive_number_is_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="positive number"):
        http_deadline({"x-request-timeout": bad}, SERVING)
    with pytest.raises(InvalidInput, match="positive number"):
        grpc_deadline({"facegallery-deadline": bad}, SERVING)


def test_grpc_reads_the_proxys_absolute_deadline_and_bounds_it() -> None:
    now = time.time()
    assert grpc_deadline({"facegallery-deadline": str(now + 3)}, SERVING) == pytest.approx(
        now + 3, abs=1
    )
    assert grpc_deadline({"facegallery-deadline": str(now + 1e6)}, SERVING) == pytest.approx(
        now + 60, abs=1
    )
    assert grpc_deadline({"x-request-timeout": "1"}, SERVING) == pytest.approx(now + 10, abs=1)
