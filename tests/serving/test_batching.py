"""The model deployments' batcher, on its own event loop: a call whose deadline passed or
whose caller left never reaches the model, a batch is formed of live calls only, and under
contention interactive calls go first while bulk keeps its share."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY

from facegallery.core.errors import DeadlineExceeded
from facegallery.serving.batching import DeadlineBatcher


class Model:
    """Records every batch it runs; each takes ``seconds``."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.seconds = seconds

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(self.seconds)
        return [item.upper() for item in items]

    @property
    def ran(self) -> list[str]:
        return [item for batch in self.batches for item in batch]


def _shed(reason: str, stage: str) -> float:
    value = REGISTRY.get_sample_value("facegallery_shed_total", {"reason": reason, "stage": stage})
    return value or 0.0


def test_expired_and_cancelled_calls_never_reach_the_model() -> None:
    async def scenario() -> tuple[Model, list[str | BaseException]]:
        model = Model(seconds=0.2)
        batcher = DeadlineBatcher("test-stage", model, 4, 0.0, 0.25)
        first = asyncio.create_task(batcher("busy", None, "interactive"))  # holds the model
        await asyncio.sleep(0.05)
        soon = time.time() + 0.05
        expiring = asyncio.create_task(batcher("expiring", soon, "interactive"))
        leaving = asyncio.create_task(batcher("leaving", None, "interactive"))
        live = asyncio.create_task(batcher("live", time.time() + 5, "interactive"))
        await asyncio.sleep(0.01)
        leaving.cancel()  # its caller left while it waited
        late = batcher("late", time.time() - 1, "interactive")  # expired on arrival
        answers = await asyncio.gather(first, expiring, leaving, live, late, return_exceptions=True)
        return model, list(answers)

    before = {r: _shed(r, "test-stage") for r in ("expired", "cancelled")}
    model, answers = asyncio.run(scenario())
    assert model.ran == ["busy", "live"]  # the second batch was formed of the live call only
    assert answers[0] == "BUSY" and answers[3] == "LIVE"
    assert isinstance(answers[1], DeadlineExceeded) and isinstance(answers[4], DeadlineExceeded)
    assert isinstance(answers[2], asyncio.CancelledError)
    assert _shed("expired", "test-stage") - before["expired"] == 2
    assert _shed("cancelled", "test-stage") - before["cancelled"] == 1


@pytest.mark.parametrize("max_batch_size", [1, 4, 8])
def test_interactive_first_and_bulk_keeps_its_share(max_batch_size: int) -> None:
    """40 bulk and 40 interactive calls wait together: every batch serves interactive calls
    first, and bulk still gets its quarter of the slots while both wait (at any batch size,
    one included), then the rest once interactive is done."""

    async def scenario() -> Model:
        model = Model()
        batcher = DeadlineBatcher("share", model, max_batch_size, 0.0, 0.25)
        calls = [batcher(f"b{n}", None, "bulk") for n in range(40)]
        calls += [batcher(f"i{n}", None, "interactive") for n in range(40)]
        await asyncio.gather(*calls)
        return model

    model = asyncio.run(scenario())
    ran = model.ran
    assert sorted(ran) == sorted([f"b{n}" for n in range(40)] + [f"i{n}" for n in range(40)])
    last_interactive = max(i for i, item in enumerate(ran) if item.startswith("i"))
    contended = ran[: last_interactive + 1]
    bulk_share = sum(item.startswith("b") for item in contended) / len(contended)
    assert 0.15 <= bulk_share <= 0.30, (bulk_share, model.batches)
    assert all(len(batch) <= max_batch_size for batch in model.batches)


def test_a_batch_waits_for_company_then_runs() -> None:
    async def scenario() -> Model:
        model = Model()
        batcher = DeadlineBatcher("fill", model, 8, 0.05, 0.25)
        first = asyncio.create_task(batcher("a", None, "interactive"))
        await asyncio.sleep(0.01)
        await asyncio.gather(first, batcher("b", None, "interactive"))
        return model

    assert asyncio.run(scenario()).batches == [["a", "b"]]


def test_a_failing_model_fails_its_batch_and_the_batcher_goes_on() -> None:
    calls = 0

    async def flaky(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("the model broke")
        return [item.upper() for item in items]

    async def scenario() -> list[str | BaseException]:
        batcher = DeadlineBatcher("flaky", flaky, 4, 0.0, 0.25)
        first = await asyncio.gather(batcher("a", None, "bulk"), return_exceptions=True)
        second = await asyncio.gather(batcher("b", None, "bulk"), return_exceptions=True)
        return [*first, *second]

    failed, answered = asyncio.run(scenario())
    assert isinstance(failed, ValueError) and answered == "B"
