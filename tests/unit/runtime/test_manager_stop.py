"""A stop request ends the manager even while it is still starting (caches not filled yet)."""

from __future__ import annotations

import asyncio
from typing import Any

from kaito_operator.runtime import NODE, ApiError, FakeClock, Manager, RuntimeMetrics


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
