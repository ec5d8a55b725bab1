"""A Workspace the operator cannot read (a preset this version no longer knows) is still deletable."""

from __future__ import annotations

import copy
from typing import Any

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import (
    DEPLOYMENT,
    NODE,
    SERVICE,
    EventRecorder,
    FakeClock,
    Informer,
    ObjectKey,
    Result,
    RuntimeMetrics,
)
from kaito_operator.workspace.controller import WorkspaceReconciler
from kaito_operator.workspace.workload import RenderOptions


class RecordingClient:
    """Answers writes with the object as patched; records every call."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.calls: list[tuple[str, Any]] = []

    async def patch(self, kind: Any, name: str, patch: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("patch", patch))
        updated = copy.deepcopy(self.obj)
        if isinstance(patch, list):  # JSON patch of the finalizers
            for op in patch:
                if op["op"] == "remove":
                    index = int(op["path"].rsplit("/", 1)[1])
                    del updated["metadata"]["finalizers"][index]
        return updated

    async def create(self, kind: Any, obj: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", kind))
        return obj


async def test_a_workspace_with_an_unknown_preset_loses_its_finalizer_when_deleted() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": "ws1",
            "namespace": "team",
            "uid": "6c0f7c8e-2b1a-4a55-9d2c-0e6f3c1d2a90",
            "resourceVersion": "5",
            "generation": 1,
            "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": ["someone.else/keep", c.WORKSPACE_FINALIZER],
        },
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
        "inference": {"preset": {"name": "a-preset-this-version-dropped"}},
    }
    client = RecordingClient(obj)
    clock, metrics = FakeClock(), RuntimeMetrics()

    def informer(kind: Any) -> Informer:
        return Informer(client, kind, clock=clock, metrics=metrics)  # type: ignore[arg-type]

    workspaces = informer(WORKSPACE)
    workspaces.store.put(obj)
    reconciler = WorkspaceReconciler(
        client,  # type: ignore[arg-type]
        workspaces=workspaces,
        machines=informer(MACHINE),
        nodes=informer(NODE),
        deployments=informer(DEPLOYMENT),
        services=informer(SERVICE),
        recorder=EventRecorder(client, clock, component="test"),  # type: ignore[arg-type]
        clock=clock,
        options=RenderOptions(),
    )

    assert await reconciler.reconcile(ObjectKey("team", "ws1")) == Result()

    patches = [body for verb, body in client.calls if verb == "patch"]
    assert patches[-1] == [
        {"op": "test", "path": "/metadata/finalizers/1", "value": c.WORKSPACE_FINALIZER},
        {"op": "remove", "path": "/metadata/finalizers/1"},
    ]
