"""Test helpers for anyone testing against the operator on a real control plane (the project's own
suites and benchmarks use them too).

- ``plain_client``: an unthrottled KubeClient on a kubernetes-asyncio ApiClient.
- ``gpu_node``: a kwok-managed node labelled the way AKS labels a GPU node.
- Reading conditions: ``condition``, ``has_condition``, ``is_true``, ``gone``.
- Deadline-bounded waits, never sleeps: ``wait_for`` (watches one object), ``wait_for_item``
  (watches a collection), ``eventually`` (polls any check).
- Cleaning up: ``delete_quietly`` (delete, ignoring API errors), ``force_delete`` (strip the
  finalizers, then delete), ``force_delete_machines`` (a namespace's Machines and their nodes).
- ``operator_settings`` and ``running_operator`` moved to ``kaito.testing`` (they build the operator
  through the composition root, in the application package above this one).

Pair it with the ``sandbox.testing`` pytest plugin, which starts the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import NODE, ApiError, KubeClient, RealClock, ResourceKind, RuntimeMetrics

T = TypeVar("T")

INSTANCE_TYPE = "Standard_NC12s_v3"
"""The instance type of ``gpu_node`` unless told otherwise."""


def plain_client(api: Any) -> KubeClient:
    """A KubeClient without client-side rate limiting, for a test's own reads and writes."""
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


# --- reading -------------------------------------------------------------------------------------
def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """The status condition of type ``kind`` (a copy), or {} when there is none."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def has_condition(kind: str, status: str, reason: str | None = None) -> Callable[[dict[str, Any] | None], bool]:
    """A predicate: condition ``kind`` has ``status`` (and ``reason``, when given)."""

    def check(obj: dict[str, Any] | None) -> bool:
        found = condition(obj, kind)
        return found.get("status") == status and (reason is None or found.get("reason") == reason)

    return check


def is_true(kind: str) -> Callable[[dict[str, Any] | None], bool]:
    """A predicate: condition ``kind`` is True."""
    return has_condition(kind, "True")


def gone(obj: dict[str, Any] | None) -> bool:
    """A predicate for ``wait_for``: the object no longer exists."""
    return obj is None


# --- waiting -------------------------------------------------------------------------------------
async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 15.0, what: str = "") -> T:
    """Poll ``check`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)  # the poll interval of a deadline-bounded condition wait


async def wait_for(
    client: KubeClient,
    kind: ResourceKind,
    name: str,
    predicate: Callable[[dict[str, Any] | None], bool],
    *,
    namespace: str | None = None,
    timeout: float = 60.0,
    what: str = "",
) -> dict[str, Any] | None:
    """Watch one object until ``predicate(obj)`` holds (``obj`` is None once it is deleted)."""
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    last: dict[str, Any] | None = None
    while True:
        items, version = await client.list(kind, namespace, field_selector=selector)
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


# --- cleaning up ---------------------------------------------------------------------------------
async def delete_quietly(client: KubeClient, kind: ResourceKind, name: str, namespace: str | None = None) -> None:
    """Delete the object; an API error (already gone, say) is ignored."""
    with contextlib.suppress(ApiError):
        await client.delete(kind, name, namespace)


async def force_delete(client: KubeClient, kind: ResourceKind, name: str, namespace: str | None = None) -> None:
    """Strip the object's finalizers and delete it; already gone is fine, any other API error is raised."""
    try:
        await client.patch(kind, name, {"metadata": {"finalizers": None}}, namespace=namespace)
        await client.delete(kind, name, namespace)
    except ApiError as error:
        if not error.not_found:
            raise


async def force_delete_machines(client: KubeClient, namespace: str) -> None:
    """Force-delete the Machines labelled with ``namespace`` (``kaito.sh/workspacenamespace``) and the
    nodes of their agent pools: what a failed test left behind."""
    machines, _ = await client.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
    for machine in machines:
        name = machine["metadata"]["name"]
        for node in (await client.list(NODE, label_selector=f"{c.LABEL_AKS_AGENTPOOL}={name}"))[0]:
            await force_delete(client, NODE, node["metadata"]["name"])
        await force_delete(client, MACHINE, name)


# --- the operator in the test's loop: moved to ``kaito.testing`` ------------------------------------
# They build the operator through the composition root, in the application package above this one; a
# re-export from here would make this package import the application (an import pointing back up).
# The old names stay, so code written against them fails with the way to fix it.
class MovedToKaitoTesting(ImportError):
    """A helper that moved from ``kaito_operator.testing`` to ``kaito.testing``."""


def _moved(name: str) -> MovedToKaitoTesting:
    return MovedToKaitoTesting(
        f"{name} moved from kaito_operator.testing to kaito.testing: use `from kaito.testing import {name}`"
    )


def operator_settings(**overrides: Any) -> Any:
    """Moved: ``kaito.testing.operator_settings``."""
    raise _moved("operator_settings")


def running_operator(api: Any, *args: Any, **kwargs: Any) -> Any:
    """Moved: ``kaito.testing.running_operator``."""
    raise _moved("running_operator")
