"""A Machine made and deleted while the Machine watch was down (it ends in 410 Gone) has no watch
event at all; the re-list that follows must still hand its name back, or the Workspace stays one
Machine short. The reconciler against a scripted API client (lists, a watch, writes)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator
from typing import Any

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import (
    DEPLOYMENT,
    NODE,
    POD,
    SERVICE,
    ApiError,
    EventRecorder,
    FakeClock,
    Informer,
    ObjectKey,
    ResourceKind,
    RuntimeMetrics,
)
from kaito_operator.testing import eventually
from kaito_operator.workspace.controller import WorkspaceReconciler
from kaito_operator.workspace.workload import RenderOptions
from tests.unit.workspace.workspace_builders import workspace


class ScriptedApi:
    """Empty lists; the Machine watch ends in 410 Gone when ``gap`` is set; every write succeeds."""

    def __init__(self) -> None:
        self.gap = asyncio.Event()
        self.machine_lists = 0
        self.created: list[str] = []

    async def list(self, kind: ResourceKind, namespace: Any = None, **_: Any) -> tuple[list[Any], str]:
        if kind == MACHINE:
            self.machine_lists += 1
        return [], "1"

    async def watch(self, kind: ResourceKind, namespace: Any = None, **_: Any) -> AsyncGenerator[dict[str, Any], None]:
        if kind == MACHINE and not self.gap.is_set():
            await self.gap.wait()
            raise ApiError(410, "Expired", "too old resource version: 1 (9)")
        await asyncio.Event().wait()  # quiet until cancelled
        yield {}

    async def get(self, kind: ResourceKind, name: str, namespace: Any = None) -> dict[str, Any]:
        raise ApiError(404, "NotFound", f"{name} not found")

    async def create(self, kind: ResourceKind, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        if kind == MACHINE:
            self.created.append(obj["metadata"]["name"])
        return copy.deepcopy(obj)

    async def apply(self, kind: ResourceKind, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        return copy.deepcopy(obj)

    async def patch(self, kind: ResourceKind, name: str, body: Any, **_: Any) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": "2"}}


async def test_a_machine_made_and_deleted_in_a_watch_gap_is_made_again_after_the_relist() -> None:
    api = ScriptedApi()
    clock = FakeClock()
    metrics = RuntimeMetrics()

    def informer(kind: ResourceKind) -> Informer:
        return Informer(api, kind, clock=clock, metrics=metrics, resync_period=0)  # type: ignore[arg-type]

    machines = informer(MACHINE)
    workspaces = informer(WORKSPACE)
    reconciler = WorkspaceReconciler(
        api,  # type: ignore[arg-type]
        workspaces=workspaces,
        machines=machines,
        nodes=informer(NODE),
        deployments=informer(DEPLOYMENT),
        services=informer(SERVICE),
        pods=informer(POD),
        recorder=EventRecorder(api, clock, component="test"),  # type: ignore[arg-type]
        clock=clock,
        options=RenderOptions(),
    )
    requeued: list[ObjectKey] = []
    machines.add_relist_handler(lambda listed: requeued.extend(reconciler.forget_listed(listed)))
    obj = workspace(name="gap", namespace="team").model_dump(by_alias=True, exclude_none=True)
    obj["metadata"]["finalizers"] = [c.WORKSPACE_FINALIZER]
    workspaces.store.put(obj)
    key = ObjectKey("team", "gap")

    watching = asyncio.create_task(machines.run())
    try:
        await machines.wait_synced()
        await reconciler.reconcile(key)
        [name] = api.created
        await reconciler.reconcile(key)
        assert api.created == [name], "not made twice while its watch event is on its way"

        # The Machine is made and deleted (by someone else) while the watch is down; it ends in 410.
        api.gap.set()

        async def relisted() -> bool | None:
            return True if requeued else None

        await eventually(relisted, what="the re-list")
        assert api.machine_lists == 2
        assert requeued == [key], "the Workspace is looked at again after the re-list"
        await reconciler.reconcile(key)
        assert api.created == [name, name], "the lost Machine is made again, under the lowest free name"
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
