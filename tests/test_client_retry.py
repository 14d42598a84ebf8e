"""How the clients spend a deadline (`client.retry`): each attempt gets what is left, a
refusal with Retry-After is retried after a jittered pause, and never past the deadline."""

from __future__ import annotations

import pytest

from facegallery.client.retry import within_deadline
from facegallery.core.errors import DeadlineExceeded, InvalidInput, Overloaded, Unavailable


def _never(pause: float) -> None:
    pytest.fail(f"slept {pause} s")


def test_a_refusal_is_retried_after_its_jittered_retry_after() -> None:
    pauses: list[float] = []
    asked: list[float] = []

    def send(remaining: float) -> str:
        asked.append(remaining)
        if len(asked) < 3:
            raise Overloaded("busy", retry_after_s=1)
        return "answer"

    answer = within_deadline(send, 30.0, 3, sleep=pauses.append, jitter=lambda: 0.25)
    assert answer == "answer" and pauses == [0.75, 0.75]
    assert all(left <= 30.0 for left in asked) and asked == sorted(asked, reverse=True)


def test_no_retry_past_the_deadline_nor_past_the_attempts() -> None:
    def refused(_: float) -> str:
        raise Unavailable("down", retry_after_s=5)

    with pytest.raises(Unavailable):  # a 5 s pause cannot fit a 2 s deadline
        within_deadline(refused, 2.0, 5, sleep=_never, jitter=lambda: 0.5)
    pauses: list[float] = []
    with pytest.raises(Unavailable):
        within_deadline(refused, 60.0, 2, sleep=pauses.append, jitter=lambda: 0.5)
    assert pauses == [5.0]


def test_what_is_not_a_refusal_is_never_retried() -> None:
    calls: list[float] = []

    def wrong(remaining: float) -> str:
        calls.append(remaining)
        raise InvalidInput("bad image")

    with pytest.raises(InvalidInput):
        within_deadline(wrong, 10.0, 3, sleep=_never)
    assert len(calls) == 1
    with pytest.raises(DeadlineExceeded):
        within_deadline(wrong, 0.0, 3)
