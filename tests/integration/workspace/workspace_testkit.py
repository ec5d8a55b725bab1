"""Builders, waits and a stand-in GPU provisioner for the workspace controller's integration tests.

Everything talks to the real control plane. Waits watch the object until a condition holds or a
deadline passes (no sleeps). The stand-in provisioner is a controller on the project's runtime,
plugged into the operator through a controller factory, exactly as the real one will be.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from kaito_operator.api import constants as c
from kaito_operator.manager import DEFAULT_CONTROLLERS, ControllerFactory, Operator, OperatorContext, build_operator
from kaito_operator.presets.skus import lookup
from kaito_operator.runtime import (
    MACHINE,
    NODE,
    WORKSPACE,
    ApiError,
    Controller,
    KubeClient,
    ObjectKey,
    RealClock,
    ResourceKind,
    Result,
    RuntimeMetrics,
    map_to_self,
)
from kaito_operator.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
INSTANCE_TYPE = "Standard_NC12s_v3"


def plain_client(api: Any) -> KubeClient:
    return KubeClient(api, clock=RealClock(), metrics=RuntimeMetrics(), qps=0, burst=1)


# --- builders ------------------------------------------------------------------------------------
def gpu_node(
    name: str,
    *,
    labels: dict[str, str],
    instance_type: str = INSTANCE_TYPE,
    gpus: int = 2,
    taints: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """A kwok-managed node labelled the way AKS labels a GPU node."""
    capacity = {"cpu": "12", "memory": "224Gi", "pods": "110", c.GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                c.LABEL_INSTANCE_TYPE: instance_type,
                "beta.kubernetes.io/instance-type": instance_type,
                c.LABEL_AKS_AGENTPOOL: name[:12],
                "accelerator": "nvidia",
                **labels,
            },
        },
        "spec": {"taints": list(taints)} if taints else {},
        "status": {"capacity": capacity, "allocatable": capacity},
    }


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


# --- reading -------------------------------------------------------------------------------------
def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def is_true(kind: str) -> Callable[[dict[str, Any] | None], bool]:
    return lambda obj: condition(obj, kind).get("status") == "True"


async def wait_for(
    client: KubeClient,
    kind: ResourceKind,
    name: str,
    namespace: str | None,
    predicate: Callable[[dict[str, Any] | None], bool],
    *,
    timeout: float = 60.0,
    what: str = "",
) -> dict[str, Any] | None:
    """Watch one object until ``predicate(obj)`` holds (obj is None once it is gone)."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    selector = f"metadata.name={name}"
    while True:
        items, version = await _list_one(client, kind, namespace, selector)
        last = items[0] if items else None
        if predicate(last):
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or name}; last seen: {last}")
        try:
            async with asyncio.timeout(remaining):
                async for event in client.watch(
                    kind,
                    namespace,
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining) + 1),
                    field_selector=selector,
                ):
                    if event["type"] == "BOOKMARK":
                        continue
                    last = None if event["type"] == "DELETED" else event["object"]
                    if predicate(last):
                        return last
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what or name}; last seen: {last}"
            ) from None
        except ApiError as error:
            if not error.gone:
                raise


async def wait_for_item(
    client: KubeClient,
    kind: ResourceKind,
    namespace: str | None,
    predicate: Callable[[dict[str, Any]], bool],
    *,
    field_selector: str | None = None,
    timeout: float = 30.0,
    what: str = "",
) -> dict[str, Any]:
    """Watch a collection until some object satisfies ``predicate``."""
    async with asyncio.timeout(timeout):
        while True:
            items, version = await client.list(kind, namespace, field_selector=field_selector)
            for item in items:
                if predicate(item):
                    return item
            try:
                async for event in client.watch(
                    kind,
                    namespace,
                    resource_version=version,
                    timeout_seconds=int(timeout) + 1,
                    field_selector=field_selector,
                ):
                    if event["type"] in ("ADDED", "MODIFIED") and predicate(event["object"]):
                        return dict(event["object"])
            except ApiError as error:
                if not error.gone:
                    raise
    raise AssertionError(f"no {what or kind.kind} appeared")  # pragma: no cover (timeout raises)


async def _list_one(
    client: KubeClient, kind: ResourceKind, namespace: str | None, field_selector: str
) -> tuple[list[dict[str, Any]], str]:
    return await client.list(kind, namespace, field_selector=field_selector)


async def delete_quietly(client: KubeClient, kind: ResourceKind, name: str, namespace: str | None = None) -> None:
    with contextlib.suppress(ApiError):
        await client.delete(kind, name, namespace)


# --- the operator in the test's loop -------------------------------------------------------------
def test_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "metrics_port": 0,
        "health_port": 0,
        "bind_address": "127.0.0.1",
        "qps": 0,
        "concurrency": 4,
        "shutdown_grace": 5,
        "request_timeout": 10,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_operator(
    api: Any, *, extra_controllers: Sequence[ControllerFactory] = (), **settings: Any
) -> AsyncIterator[Operator]:
    """The operator built by the composition root with the test's ApiClient, run in this loop."""
    operator = await build_operator(
        test_settings(**settings), api_client=api, controllers=[*DEFAULT_CONTROLLERS, *extra_controllers]
    )
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop), name="operator")
    try:
        async with asyncio.timeout(30):
            assert await operator.manager.wait_running(), f"operator did not start: {operator.manager.failure}"
        yield operator
    finally:
        stop.set()
        code = await task
        await operator.aclose()
        assert code == 0, f"operator failed: {operator.manager.failure}"


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
    await wait_for(client, WORKSPACE, name, namespace, lambda obj: obj is None, timeout=timeout, what=f"{name} gone")


async def machines_of(client: KubeClient, namespace: str) -> list[dict[str, Any]]:
    machines, _ = await client.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
    return machines
