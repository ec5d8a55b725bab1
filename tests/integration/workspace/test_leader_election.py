"""Leader election on a real Lease: one manager runs controllers, a standby takes over on release or expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kaito_operator.runtime import LEASE, LeaderElector, Manager, ObjectKey, RealClock, Result, RuntimeMetrics
from kaito_operator.testing import plain_client

pytestmark = [pytest.mark.controlplane]


class Idle:
    async def reconcile(self, key: ObjectKey) -> Result:
        return Result()


def candidate(api: Any, namespace: str, identity: str, lease_duration: float = 3) -> tuple[Manager, LeaderElector]:
    client = plain_client(api)
    elector = LeaderElector(
        client,
        RealClock(),
        namespace=namespace,
        name="leader",
        identity=identity,
        lease_duration=lease_duration,
        renew_deadline=lease_duration * 2 / 3,
        retry_period=0.2,
    )
    manager = Manager(client, clock=RealClock(), metrics=RuntimeMetrics(), leader_elector=elector)
    manager.controller("idle", Idle())
    return manager, elector


async def test_one_leader_and_a_quick_handover_on_release(kube_api: Any, namespace: str) -> None:
    # A long lease: a takeover within 2 s can then only come from the release, never from expiry,
    # however slow a loaded machine is.
    first, first_elector = candidate(kube_api, namespace, "first", lease_duration=10)
    second, second_elector = candidate(kube_api, namespace, "second", lease_duration=10)
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    first_task = asyncio.create_task(first.run(stop_first))
    async with asyncio.timeout(10):
        assert await first.wait_running()
    second_task = asyncio.create_task(second.run(stop_second))
    try:
        waiting = asyncio.ensure_future(second.wait_running())
        done, _ = await asyncio.wait([waiting], timeout=1.5)
        assert not done, "the standby does not run controllers while the leader renews"
        assert second.ready, "a standby still reports ready (its caches are warm)"
        lease = await plain_client(kube_api).get(LEASE, "leader", namespace)
        assert lease["spec"]["holderIdentity"] == "first"

        stop_first.set()
        assert await first_task == 0
        released = time.monotonic()
        async with asyncio.timeout(5):
            assert await waiting
        assert time.monotonic() - released < 2, "released, not expired: the standby takes over at once"
        lease = await plain_client(kube_api).get(LEASE, "leader", namespace)
        assert lease["spec"]["holderIdentity"] == "second"
        assert lease["spec"]["leaseTransitions"] >= 1
        assert second_elector.leading.is_set() and not first_elector.leading.is_set()
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(first_task, second_task, return_exceptions=True)


async def test_an_expired_lease_of_a_dead_holder_is_taken_over(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    await client.create(
        LEASE,
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "leader", "namespace": namespace},
            "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 3, "renewTime": "2024-01-01T00:00:00.000000Z"},
        },
    )
    manager, _ = candidate(kube_api, namespace, "heir")
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(manager.run(stop))
    try:
        async with asyncio.timeout(15):
            assert await manager.wait_running()
        # Expiry is judged on our own clock from when we first saw the record, never on its timestamps.
        assert time.monotonic() - started >= 3
    finally:
        stop.set()
        assert await task == 0


class Stuck:
    """A reconcile that never ends on its own and records how it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def reconcile(self, key: ObjectKey) -> Result:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return Result()


async def test_a_leader_that_sees_another_holder_cancels_its_reconciles_at_once(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    elector = LeaderElector(
        client, RealClock(), namespace=namespace, name="leader", identity="first", lease_duration=10, renew_deadline=6
    )
    # An hour of grace: a cancellation seen within the wait below can only be the immediate one.
    manager = Manager(client, clock=RealClock(), metrics=RuntimeMetrics(), leader_elector=elector, shutdown_grace=3600)
    stuck = Stuck()
    controller = manager.controller("stuck", stuck)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        async with asyncio.timeout(15):
            assert await manager.wait_running()
        controller.queue.add(ObjectKey(namespace, "a"))
        async with asyncio.timeout(15):
            await stuck.started.wait()

        # Another replica takes the Lease (as after a partition in which ours expired).
        lease = await client.get(LEASE, "leader", namespace)
        lease["spec"]["holderIdentity"] = "second"
        await client.replace(LEASE, lease)

        async with asyncio.timeout(60):
            await stuck.cancelled.wait()
            assert await task == 1, "a process that lost the Lease exits non-zero, to restart clean"
        assert manager.lost_leadership
        assert not elector.leading.is_set()
        assert (await client.get(LEASE, "leader", namespace))["spec"]["holderIdentity"] == "second", "left alone"
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
