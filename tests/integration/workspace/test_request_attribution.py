"""Every API request is counted under the controller whose reconcile sent it (also from tasks the
reconcile spawns), and informer traffic under none: what the fleet benchmark reports per controller."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kaito_operator.runtime import NAMESPACE, KubeClient, Manager, ObjectKey, RealClock, Result, RuntimeMetrics

pytestmark = [pytest.mark.controlplane]


class Reads:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.done = asyncio.Event()

    async def reconcile(self, key: ObjectKey) -> Result:
        await self.client.get(NAMESPACE, key.name)
        await asyncio.create_task(self.client.get(NAMESPACE, key.name))  # a spawned task counts too
        self.done.set()
        return Result()


def by_controller(metrics: RuntimeMetrics, controller: str, verb: str) -> float:
    value = metrics.registry.get_sample_value(
        "kaito_api_requests_by_controller_total", {"controller": controller, "verb": verb}
    )
    return value or 0.0


async def test_requests_are_attributed_to_the_reconciling_controller(kube_api: Any, namespace: str) -> None:
    metrics = RuntimeMetrics()
    client = KubeClient(kube_api, clock=RealClock(), metrics=metrics, qps=0, burst=1)
    manager = Manager(client, clock=RealClock(), metrics=metrics)
    reads = Reads(client)
    controller = manager.controller("reader", reads)
    controller.watch(manager.informer(NAMESPACE))
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        async with asyncio.timeout(30):
            assert await manager.wait_running()
            await reads.done.wait()
    finally:
        stop.set()
        assert await task == 0
    assert by_controller(metrics, "reader", "get") >= 2
    assert by_controller(metrics, "reader", "list") == 0, "the informer's list is not the controller's"
    assert by_controller(metrics, "", "list") >= 1 and by_controller(metrics, "", "watch") >= 1
