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
