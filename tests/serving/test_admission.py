"""Admission control on time, with the clock and the rate in the test's hands: an idle
service admits everything, a busy one refuses what could not finish before its deadline
(with a Retry-After of the time to drain what is in flight), and switched off it admits all."""

from __future__ import annotations

import pytest

from facegallery.core.config import AdmissionSettings
from facegallery.core.errors import Overloaded
from facegallery.serving.admission import Admission


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("facegallery.serving.admission.time.monotonic", clock.monotonic)
    return clock


def _served(gate: Admission, clock: Clock, per_second: int, seconds: int) -> None:
    """``per_second`` calls completed each second for ``seconds``."""
    for _ in range(seconds):
        for _ in range(per_second):
            gate.done(gate.admit(1, None), served=True)
        clock.now += 1.0


def test_an_idle_service_admits_and_a_busy_one_refuses_what_would_be_late(clock: Clock) -> None:
    gate = Admission(AdmissionSettings(window_s=3.0, min_in_flight=4, headroom=0.8), "gateway")
    held = [gate.admit(1, 2.0) for _ in range(4)]  # cold, nothing measured: the floor admits
    with pytest.raises(Overloaded):
        gate.admit(1, 2.0)  # four ahead and no rate measured yet
    gate.done(held.pop(), served=True)
    held.append(gate.admit(16, 2.0))  # fewer ahead than the floor: admitted whatever it weighs
    for ticket in held:
        gate.done(ticket, served=True)
    clock.now += 10.0  # out of the window
    _served(gate, clock, per_second=10, seconds=3)  # measured: about 10 images/s
    assert 9.0 <= gate.rate() <= 12.0
    in_flight = [gate.admit(1, 10.0) for _ in range(12)]  # 1.2 s of work: within 10 s
    with pytest.raises(Overloaded) as refused:
        gate.admit(1, 1.0)  # 1.3 s ahead of it, 0.8 s of budget
    assert refused.value.retry_after_s == 2  # 12 in flight at 10/s: drained in 1.2 s
    gate.admit(1, 5.0)  # a longer deadline still fits
    for ticket in in_flight:
        gate.done(ticket, served=True)
    gate.admit(1, 1.0)  # drained: admitted again


def test_switched_off_it_admits_everything(clock: Clock) -> None:
    gate = Admission(AdmissionSettings(enabled=False, min_in_flight=1), "gateway")
    _served(gate, clock, per_second=2, seconds=3)
    for _ in range(50):
        gate.admit(1, 0.5)
    assert gate.in_flight == 50


def test_failed_calls_do_not_flatter_the_rate(clock: Clock) -> None:
    gate = Admission(AdmissionSettings(window_s=3.0), "gateway")
    for _ in range(100):
        gate.done(gate.admit(1, None), served=False)
    assert gate.rate() == 0.0 and gate.in_flight == 0
