"""A stop request ends the manager even while it is still starting (caches not filled yet)."""

from __future__ import annotations

import asyncio
from typing import Any

from kaito_operator.runtime import NODE, ApiError, FakeClock, LostLeadership, Manager, ObjectKey, Result, RuntimeMetrics
from kaito_operator.testing import eventually


class Unreachable:
    """An API server that never answers a list."""

    async def list(self, *args: Any, **kwargs: Any) -> Any:
        raise ApiError(503, "ServiceUnavailable", "etcd is down")


async def test_stop_while_caches_are_filling() -> None:
    manager = Manager(Unreachable(), clock=FakeClock(), metrics=RuntimeMetrics())  # type: ignore[arg-type]
    informer = manager.informer(NODE)
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    for _ in range(10):
        await asyncio.sleep(0)
    assert not informer.has_synced and not running.done()
    stop.set()
    async with asyncio.timeout(1):
        assert await running == 0


class LosingElector:
    """A leader elector that leads at once and loses the Lease when told to."""

    def __init__(self) -> None:
        self.leading = asyncio.Event()
        self.leading.set()
        self.lose = asyncio.Event()

    async def run(self) -> None:
        await self.lose.wait()
        raise LostLeadership("lease ns/leader is held by 'other' now")


class BlockingReconciler:
    """A reconcile that runs until cancelled, as one in flight during a graceful stop."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False

    async def reconcile(self, key: ObjectKey) -> Result:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return Result()


async def test_losing_the_lease_during_a_graceful_stop_cancels_reconciles_at_once() -> None:
    elector = LosingElector()
    manager = Manager(
        Unreachable(),  # type: ignore[arg-type]
        clock=FakeClock(),
        metrics=RuntimeMetrics(),
        shutdown_grace=3600,  # a graceful stop would wait this long for the reconcile in flight
        leader_elector=elector,  # type: ignore[arg-type]
    )
    reconciler = BlockingReconciler()
    controller = manager.controller("blocking", reconciler, concurrency=1)
    stop = asyncio.Event()
    running = asyncio.create_task(manager.run(stop))
    assert await manager.wait_running()
    controller.queue.add(ObjectKey("ns", "a"))
    await reconciler.started.wait()
    stop.set()  # the graceful stop begins: the reconcile in flight is given the grace period ...

    async def stopping() -> bool | None:
        return True if controller.queue.is_shut_down else None

    await eventually(stopping, what="the stop begun")
    elector.lose.set()  # ... until another replica takes the Lease: then it must end now
    async with asyncio.timeout(30):  # a hang guard only: without the fix it waits the whole grace
        await running
    assert reconciler.cancelled
    assert manager.lost_leadership
