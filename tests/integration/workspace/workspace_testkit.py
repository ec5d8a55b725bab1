"""Workspace builders and a stand-in GPU provisioner for the workspace controller's integration tests.

Everything talks to the real control plane; the general helpers (the client, waits that watch an
object until a condition holds or a deadline passes, the operator in the test's loop) come from
``kaito_operator.testing``. The stand-in provisioner is a controller on the project's runtime,
plugged into the operator through a controller factory, exactly as the real one is.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import yaml

from kaito.operator import OperatorContext
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NODE, ApiError, Controller, KubeClient, ObjectKey, Result, map_to_self
from kaito_operator.testing import INSTANCE_TYPE, condition, delete_quietly, gone, gpu_node, wait_for
from kaito_operator.vm_sizes import lookup

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


# --- builders ------------------------------------------------------------------------------------
def example_workspace(
    file: str, *, name: str, namespace: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """An example manifest from examples/, renamed into the test's namespace and label space."""
    path = EXAMPLES / file
    if path.exists():
        workspace: dict[str, Any] = yaml.safe_load(path.read_text())
    else:  # the examples folder is another engineer's; build the falcon-7b one inline until it lands
        workspace = {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "workspace-falcon-7b", "annotations": {c.ANNOTATION_ENABLE_LB: "True"}},
            "resource": {"instanceType": INSTANCE_TYPE, "labelSelector": {"matchLabels": {"apps": "falcon-7b"}}},
            "inference": {"preset": {"name": "falcon-7b"}},
        }
    workspace["metadata"]["name"] = name
    workspace["metadata"]["namespace"] = namespace
    if annotations is not None:
        workspace["metadata"]["annotations"] = annotations
    workspace["resource"]["labelSelector"] = {"matchLabels": dict(labels)}
    return workspace


def preset_workspace(
    *,
    name: str,
    namespace: str,
    labels: dict[str, str],
    count: int = 1,
    preset: str = "falcon-7b",
    instance_type: str = INSTANCE_TYPE,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
        "resource": {"count": count, "instanceType": instance_type, "labelSelector": {"matchLabels": labels}},
        "inference": {"preset": {"name": preset}},
    }


# --- a stand-in GPU provisioner ------------------------------------------------------------------
class StandInProvisioner:
    """Turns Machines of one label space into kwok nodes and marks them Ready, as gpu-provisioner would.

    ``hold_until``: make no Machine Ready until that many Machines exist (proves they were created
    concurrently). ``fail_with``: report (reason, message) as a launch failure instead.
    """

    def __init__(
        self, workspace_namespace: str, *, hold_until: int = 0, fail_with: tuple[str, str] | None = None
    ) -> None:
        self.namespace = workspace_namespace
        self.hold_until = hold_until
        self.fail_with = fail_with
        self.nodes_made: list[str] = []
        self.machines_seen_when_first_ready: int | None = None
        self.failed_at: float | None = None
        self._client: KubeClient | None = None
        self._machines: Any = None

    def factory(self, context: OperatorContext) -> Controller:
        self._client = context.client
        self._machines = context.manager.informer(MACHINE)
        controller = context.manager.controller("stand-in-provisioner", self, concurrency=4)
        controller.watch(self._machines, map_to_self)
        return controller

    def _ours(self) -> list[dict[str, Any]]:
        return [
            m
            for m in self._machines.store.list()
            if (m["metadata"].get("labels") or {}).get(c.LABEL_WORKSPACE_NAMESPACE) == self.namespace
        ]

    async def reconcile(self, key: ObjectKey) -> Result:
        assert self._client is not None
        machine = self._machines.store.get(key)
        if machine is None:
            await delete_quietly(self._client, NODE, key.name)
            return Result()
        labels = machine["metadata"].get("labels") or {}
        if labels.get(c.LABEL_WORKSPACE_NAMESPACE) != self.namespace:
            return Result()
        if machine["metadata"].get("deletionTimestamp"):
            # Like karpenter's termination: the node goes first, then the finalizer.
            await delete_quietly(self._client, NODE, key.name)
            finalizers = [f for f in machine["metadata"].get("finalizers") or [] if f != c.MACHINE_FINALIZER]
            with contextlib.suppress(ApiError):
                await self._client.patch(MACHINE, key.name, {"metadata": {"finalizers": finalizers or None}})
            return Result()
        if c.MACHINE_FINALIZER not in (machine["metadata"].get("finalizers") or []):
            finalizers = [*(machine["metadata"].get("finalizers") or []), c.MACHINE_FINALIZER]
            await self._client.patch(MACHINE, key.name, {"metadata": {"finalizers": finalizers}})
        if self.fail_with is not None:
            reason, message = self.fail_with
            if condition(machine, c.COND_MACHINE_LAUNCHED).get("status") == "False":
                return Result()
            self.failed_at = time.monotonic()  # before the write: the operator may see it first
            await self._set_status(
                key.name,
                {
                    "conditions": [
                        {"type": c.COND_MACHINE_LAUNCHED, "status": "False", "reason": reason, "message": message},
                        {"type": c.COND_READY, "status": "False", "reason": reason, "message": message},
                    ]
                },
            )
            return Result()
        if len(self._ours()) < self.hold_until:
            return Result()  # another Machine's ADDED event brings us back
        if self.machines_seen_when_first_ready is None:
            self.machines_seen_when_first_ready = len(self._ours())
        for other in self._ours():  # release every held Machine, not only this one
            await self._make_ready(other)
        return Result()

    async def _make_ready(self, machine: dict[str, Any]) -> None:
        assert self._client is not None
        name = machine["metadata"]["name"]
        if condition(machine, c.COND_READY).get("status") == "True":
            return
        instance_type = next(
            r["values"][0] for r in machine["spec"]["requirements"] if r["key"] == c.LABEL_INSTANCE_TYPE
        )
        sku = lookup(instance_type)
        labels = {k: v for k, v in (machine["metadata"].get("labels") or {}).items()}
        labels[c.LABEL_MACHINE_TYPE] = "gpu"
        node = gpu_node(
            name,
            labels=labels,
            instance_type=instance_type,
            gpus=sku.gpu_count if sku else 1,
            taints=[{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        )
        try:
            await self._client.create(NODE, node)
            self.nodes_made.append(name)
        except ApiError as error:
            if not error.already_exists:
                raise
        await self._set_status(
            name,
            {
                "nodeName": name,
                "conditions": [
                    {"type": t, "status": "True"}
                    for t in (
                        c.COND_MACHINE_LAUNCHED,
                        c.COND_MACHINE_REGISTERED,
                        c.COND_MACHINE_INITIALIZED,
                        c.COND_READY,
                    )
                ],
            },
        )

    async def _set_status(self, name: str, status: dict[str, Any]) -> None:
        assert self._client is not None
        await self._client.patch(MACHINE, name, {"status": status}, subresource="status")

    async def cleanup(self, client: KubeClient) -> None:
        for name in self.nodes_made:
            await delete_quietly(client, NODE, name)


async def delete_workspace_and_wait(client: KubeClient, name: str, namespace: str, timeout: float = 60) -> None:
    """Delete the Workspace and wait until it is gone (the running operator must finalize it)."""
    await delete_quietly(client, WORKSPACE, name, namespace)
    await wait_for(client, WORKSPACE, name, gone, namespace=namespace, timeout=timeout, what=f"{name} gone")


async def machines_of(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    machines, _ = await client.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
    return machines
