"""A leader that cannot renew its Lease within the renew deadline gives up (on a stepped clock)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kaito_operator.runtime import ApiError, FakeClock, LeaderElector, LostLeadership


class FlakyLeases:
    """Creates the Lease once, then the API server stops answering."""

    def __init__(self) -> None:
        self.created: dict[str, Any] | None = None

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.created is None:
            raise ApiError(404, "NotFound", "no lease")
        raise ApiError(503, "ServiceUnavailable", "etcd is down")

    async def create(self, kind: Any, obj: dict[str, Any]) -> dict[str, Any]:
        self.created = obj
        return obj


async def test_renewal_failures_past_the_deadline_lose_leadership() -> None:
    clock = FakeClock()
    elector = LeaderElector(
        FlakyLeases(),  # type: ignore[arg-type]
        clock,
        namespace="ns",
        name="leader",
        identity="me",
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
    )
    task = asyncio.create_task(elector.run())
    for _ in range(10):
        await asyncio.sleep(0)  # let it acquire
    assert elector.leading.is_set()
    for _ in range(4):  # 8 s of failed renewals: still within the deadline
        clock.step(2)
        for _ in range(10):
            await asyncio.sleep(0)
    assert not task.done()
    clock.step(2)
    with pytest.raises(LostLeadership):
        async with asyncio.timeout(1):
            await task
    assert not elector.leading.is_set()


class HangingLeases(FlakyLeases):
    """Creates the Lease once, then the first renewal hangs (as long as the client's own time
    limit allows, which is longer than the lease); later requests fail fast."""

    def __init__(self) -> None:
        super().__init__()
        self.hung = False

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        if self.created is not None and not self.hung:
            self.hung = True
            await asyncio.sleep(30)
        return await super().get(kind, name, namespace)


async def test_a_hung_renewal_loses_leadership_at_the_renew_deadline() -> None:
    clock = FakeClock()
    elector = LeaderElector(
        HangingLeases(),  # type: ignore[arg-type]
        clock,
        namespace="ns",
        name="leader",
        identity="me",
        lease_duration=15,
        renew_deadline=10,
        retry_period=2,
    )
    task = asyncio.create_task(elector.run())
    for _ in range(10):
        await asyncio.sleep(0)
    assert elector.leading.is_set()
    clock.step(2)  # the first renewal starts and hangs
    for _ in range(10):
        await asyncio.sleep(0)
    assert not task.done()
    clock.step(8)  # the renew deadline: stop acting now, not when the request gives up
    with pytest.raises(LostLeadership):
        async with asyncio.timeout(1):
            await task
    assert not elector.leading.is_set()
