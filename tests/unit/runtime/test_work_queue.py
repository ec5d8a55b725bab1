"""The work queue: de-duplication, one reconcile per key, delays and backoff, on a stepped clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from kaito_operator.runtime import ExponentialBackoff, FakeClock, QueueShutDown, WorkQueue


def make_queue(clock: FakeClock, jitter: float = 0.0) -> WorkQueue[str]:
    return WorkQueue(clock, backoff=ExponentialBackoff(base=1.0, cap=8.0, jitter=jitter, rng=random.Random(7)))


async def test_a_key_added_many_times_is_handed_out_once() -> None:
    queue = make_queue(FakeClock())
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"
    assert len(queue) == 0


async def test_a_key_added_while_processing_waits_until_done() -> None:
    queue = make_queue(FakeClock())
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # an event arrives during the reconcile
    assert len(queue) == 0, "never two reconciles of one key at a time"
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"


async def test_get_waits_for_an_add() -> None:
    queue = make_queue(FakeClock())
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    queue.add("x")
    assert await asyncio.wait_for(waiter, 1) == "x"


async def test_add_after_fires_when_the_clock_reaches_the_deadline() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 10)
    clock.step(9.9)
    assert len(queue) == 0
    clock.step(0.1)
    assert len(queue) == 1


async def test_add_after_keeps_the_earliest_deadline() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("a", 10)
    queue.add_after("a", 30)
    queue.add_after("a", 5)
    clock.step(5)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    clock.step(100)
    assert len(queue) == 0, "the replaced deadlines were dropped"


async def test_backoff_doubles_per_failure_up_to_the_cap_and_resets_on_forget() -> None:
    queue = make_queue(FakeClock())
    delays = [queue.add_rate_limited("a") for _ in range(6)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    queue.forget("a")
    assert queue.add_rate_limited("a") == 1.0


async def test_backoff_jitter_stays_within_its_band_and_below_the_cap() -> None:
    backoff = ExponentialBackoff(base=1.0, cap=8.0, jitter=0.2, rng=random.Random(1))
    for failures in range(1, 10):
        raw = min(8.0, 2 ** (failures - 1))
        delay = backoff.delay(failures)
        assert raw * 0.8 <= delay <= min(8.0, raw * 1.2)
    assert len({backoff.delay(3) for _ in range(20)}) > 1, "jitter spreads retries"


async def test_a_key_that_fails_for_days_stays_at_the_cap() -> None:
    backoff = ExponentialBackoff(base=0.5, cap=300.0, jitter=0.0)
    assert backoff.delay(1100) == 300.0  # 2**1099 does not fit in a float


async def test_retry_after_overrides_the_backoff() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    assert queue.add_rate_limited("a", retry_after=30) == 30
    clock.step(29)
    assert len(queue) == 0
    clock.step(1)
    assert len(queue) == 1


async def test_shut_down_wakes_waiters_and_drops_delayed_keys() -> None:
    clock = FakeClock()
    queue = make_queue(clock)
    queue.add_after("later", 5)
    waiter = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.shut_down()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(waiter, 1)
    clock.step(10)
    assert len(queue) == 0
    queue.add("ignored")
    assert len(queue) == 0


async def test_depth_changes_are_reported() -> None:
    depths: list[int] = []
    queue: WorkQueue[str] = WorkQueue(FakeClock(), on_depth_change=depths.append)
    queue.add("a")
    queue.add("b")
    await queue.get()
    assert depths == [1, 2, 1]
