"""The reconcile loop: results, error kinds, backoff and concurrency, with a stepped clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from kaito_operator.runtime import (
    ApiError,
    Controller,
    ExponentialBackoff,
    FakeClock,
    ObjectKey,
    PermanentError,
    Result,
    RuntimeMetrics,
    TaskGuard,
    TransientError,
)

A = ObjectKey("ns", "a")
B = ObjectKey("ns", "b")


class ScriptedReconciler:
    """Answers each reconcile with the next scripted outcome (a Result or an exception)."""

    def __init__(self, *outcomes: Result | BaseException) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[ObjectKey] = []
        self.called = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.running = 0
        self.max_running = 0

    async def reconcile(self, key: ObjectKey) -> Result:
        self.calls.append(key)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            outcome = self.outcomes.pop(0) if self.outcomes else Result()
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        finally:
            self.running -= 1
            self.called.set()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the event loop turn until ``condition()`` holds; a bounded number of turns, no time."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)  # one turn of the loop, not a wait for time to pass
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
async def guard() -> AsyncIterator[TaskGuard]:
    guard = TaskGuard("test")
    yield guard
    await guard.shutdown()


def make(reconciler: ScriptedReconciler, clock: FakeClock, concurrency: int = 2) -> tuple[Controller, RuntimeMetrics]:
    metrics = RuntimeMetrics()
    controller = Controller(
        "test",
        reconciler,
        clock=clock,
        metrics=metrics,
        concurrency=concurrency,
        backoff=ExponentialBackoff(base=1.0, cap=10.0, jitter=0.0),
    )
    return controller, metrics


def count(metrics: RuntimeMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_success_runs_once_and_requeue_after_comes_back_on_time(guard: TaskGuard) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler(Result(requeue_after=30), Result())
    controller, metrics = make(reconciler, clock)
    controller.start(guard)
    controller.queue.add(A)
    await until(lambda: len(reconciler.calls) == 1, "first reconcile")
    await until(lambda: controller.queue.is_delayed(A), "requeue scheduled")
    clock.step(29)
    await asyncio.sleep(0)
    assert len(reconciler.calls) == 1
    clock.step(1)
    await until(lambda: len(reconciler.calls) == 2, "requeued reconcile")
    await until(lambda: count(metrics, "kaito_reconcile_total", controller="test", result="success") == 1, "metric")
    assert count(metrics, "kaito_reconcile_total", controller="test", result="requeue") == 1
    controller.shut_down()
    await controller.wait_stopped()


async def test_transient_errors_back_off_exponentially_and_honour_retry_after(guard: TaskGuard) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler(
        TransientError("conflict"),
        ApiError(503, "ServiceUnavailable", "busy", retry_after=7),
        RuntimeError("bug"),
        Result(),
    )
    controller, metrics = make(reconciler, clock)
    controller.start(guard)
    controller.queue.add(A)
    await until(lambda: len(reconciler.calls) == 1, "first")
    await until(lambda: controller.queue.is_delayed(A), "backoff 1")
    clock.step(0.99)
    await asyncio.sleep(0)
    assert len(reconciler.calls) == 1
    clock.step(0.01)  # 1 s: first backoff
    await until(lambda: len(reconciler.calls) == 2, "second")
    await until(lambda: controller.queue.is_delayed(A), "retry-after")
    clock.step(6.9)
    await asyncio.sleep(0)
    assert len(reconciler.calls) == 2
    clock.step(0.1)  # 7 s: the server's Retry-After
    await until(lambda: len(reconciler.calls) == 3, "third")
    await until(lambda: controller.queue.is_delayed(A), "backoff 3")
    clock.step(4)  # 4 s: third failure
    await until(lambda: len(reconciler.calls) == 4, "fourth")
    await until(lambda: controller.queue.failures(A) == 0, "forgotten after success")
    assert count(metrics, "kaito_reconcile_errors_total", controller="test", kind="transient") == 2
    assert count(metrics, "kaito_reconcile_errors_total", controller="test", kind="unexpected") == 1
    controller.shut_down()
    await controller.wait_stopped()


async def test_permanent_errors_are_not_retried(guard: TaskGuard) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler(PermanentError("preset does not fit"))
    controller, metrics = make(reconciler, clock)
    controller.start(guard)
    controller.queue.add(A)
    await until(lambda: len(reconciler.calls) == 1, "first")
    await until(lambda: controller.busy == 0, "done")
    clock.step(3600)
    await asyncio.sleep(0)
    assert len(reconciler.calls) == 1
    assert not controller.queue.is_delayed(A)
    assert count(metrics, "kaito_reconcile_errors_total", controller="test", kind="permanent") == 1
    controller.shut_down()
    await controller.wait_stopped()


async def test_a_permanent_error_with_retry_after_is_looked_at_once_after_it_without_backoff(
    guard: TaskGuard,
) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler(
        PermanentError("forbidden", retry_after=300), PermanentError("forbidden", retry_after=300), Result()
    )
    controller, metrics = make(reconciler, clock)
    controller.start(guard)
    controller.queue.add(A)
    await until(lambda: len(reconciler.calls) == 1, "first")
    await until(lambda: controller.queue.is_delayed(A), "slow look scheduled")
    clock.step(299)  # fires every timer due by then, synchronously
    assert controller.queue.is_delayed(A), "not handed out before retry_after"
    assert len(reconciler.calls) == 1
    clock.step(1)
    await until(lambda: len(reconciler.calls) == 2, "second, after retry_after")
    await until(lambda: controller.queue.is_delayed(A), "slow look scheduled again")
    clock.step(299)  # the same interval again: no backoff growth, and no shorter one either
    assert controller.queue.is_delayed(A), "not handed out before retry_after"
    assert len(reconciler.calls) == 2
    clock.step(1)
    await until(lambda: len(reconciler.calls) == 3, "third")
    assert controller.queue.failures(A) == 0
    assert count(metrics, "kaito_reconcile_errors_total", controller="test", kind="permanent") == 2
    assert count(metrics, "kaito_workqueue_retries_total", controller="test") == 0
    controller.shut_down()
    await controller.wait_stopped()


async def test_one_reconcile_per_key_but_keys_in_parallel(guard: TaskGuard) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler()
    reconciler.gate = asyncio.Event()
    controller, _ = make(reconciler, clock, concurrency=4)
    controller.start(guard)
    controller.queue.add(A)
    controller.queue.add(B)
    await until(lambda: reconciler.running == 2, "both keys running")
    controller.queue.add(A)  # an event for A while A is being reconciled
    await asyncio.sleep(0)
    assert reconciler.running == 2, "A is not reconciled twice at once"
    reconciler.gate.set()
    await until(lambda: len(reconciler.calls) == 3, "A again, after the first finished")
    assert reconciler.calls.count(A) == 2
    assert reconciler.max_running == 2
    controller.shut_down()
    await controller.wait_stopped()


async def test_shutdown_lets_the_reconcile_in_flight_finish(guard: TaskGuard) -> None:
    clock = FakeClock()
    reconciler = ScriptedReconciler()
    reconciler.gate = asyncio.Event()
    controller, _ = make(reconciler, clock, concurrency=1)
    controller.start(guard)
    controller.queue.add(A)
    await until(lambda: reconciler.running == 1, "running")
    controller.shut_down()
    controller.queue.add(B)
    reconciler.gate.set()
    await controller.wait_stopped()
    assert reconciler.calls == [A]
