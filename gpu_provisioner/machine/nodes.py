"""The nodes of an agent pool: how they are found (an informer index on AKS's pool label), how their
events reach the Machine of the same name, and how they leave: cordoned, drained through the
Eviction API (which respects PodDisruptionBudgets), then deleted. Nothing here waits: a drain pass
evicts what it can and says whether the node is empty yet; the caller looks again later."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from gpu_provisioner.machine.draft import meta
from kaito_operator.api import constants as c
from kaito_operator.runtime import (
    NODE,
    POD,
    ApiError,
    Clock,
    KubeClient,
    ObjectKey,
    ResourceKind,
    TransientError,
    WatchEvent,
)

log = logging.getLogger(__name__)

NODE_INDEX: Final = "gpu-provisioner/agentpool"
ANNOTATION_DRAIN_STARTED: Final = "gpu-provisioner.kaito.sh/drain-started"
"""When the node was cordoned for deletion (on the node, so the drain timeout survives a restart)."""
_MIRROR_POD_ANNOTATION: Final = "kubernetes.io/config.mirror"
_STAMP: Final = "%Y-%m-%dT%H:%M:%SZ"


def agentpool_of(node: Mapping[str, Any]) -> list[str]:
    """Index function: the agent pool a node belongs to (AKS's label)."""
    pool = (meta(node).get("labels") or {}).get(c.LABEL_AKS_AGENTPOOL)
    return [pool] if pool else []


def node_changed(event: WatchEvent) -> bool:
    """Whether a node event can matter to its Machine. A kubelet's status heartbeat (new
    lastHeartbeatTime, the same statuses) does not: every node sends one every few seconds to
    minutes, and reconciling all Machines for each was the provisioner's main idle cost."""
    if event.type != "MODIFIED" or event.old is None:
        return True
    return _what_machines_read(event.obj) != _what_machines_read(event.old)


def _what_machines_read(node: Mapping[str, Any]) -> tuple[Any, ...]:
    node_meta = meta(node)
    status = node.get("status") or {}
    conditions = sorted((str(x.get("type")), str(x.get("status"))) for x in status.get("conditions") or [])
    return (
        node_meta.get("labels"),
        node_meta.get("annotations"),
        node_meta.get("finalizers"),
        node_meta.get("ownerReferences"),
        node_meta.get("deletionTimestamp"),
        node.get("spec"),
        status.get("capacity"),
        status.get("allocatable"),
        conditions,
    )


def map_node_to_machine(event: WatchEvent) -> list[ObjectKey]:
    """A node of pool P concerns Machine P (pool name = Machine name)."""
    return [ObjectKey("", pool) for pool in agentpool_of(event.obj)]


async def json_patch(
    client: KubeClient, kind: ResourceKind, name: str, operations: list[dict[str, Any]]
) -> dict[str, Any]:
    """A JSON patch guarded by "test" operations; a failed test (our cached copy is stale) is a
    conflict to retry once the watch brings the current object."""
    try:
        return await client.patch(kind, name, operations, patch_type="json")
    except ApiError as error:
        if error.status in (409, 422):
            raise TransientError(f"{kind} {name} changed meanwhile: {error.api_message}", reason="Conflict") from error
        raise


def _evictable(pod: Mapping[str, Any]) -> bool:
    """Pods a drain evicts: not DaemonSet-owned (the DaemonSet would put them back), not mirror pods
    (the kubelet owns them), not finished, not already going."""
    pod_meta = meta(pod)
    if any(ref.get("kind") == "DaemonSet" for ref in pod_meta.get("ownerReferences") or []):
        return False
    if _MIRROR_POD_ANNOTATION in (pod_meta.get("annotations") or {}):
        return False
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    return not pod_meta.get("deletionTimestamp")


@dataclass(frozen=True)
class DrainPass:
    """One look at a draining node."""

    empty: bool
    """No pod is left that a drain must wait for (or the drain timeout passed)."""
    timed_out: bool = False
    blocked: tuple[str, ...] = ()
    """Pods whose eviction a PodDisruptionBudget refused this time (namespace/name)."""


async def drain_pass(client: KubeClient, node: Mapping[str, Any], *, clock: Clock, timeout_s: float) -> DrainPass:
    """Cordon ``node`` (spec.unschedulable) and ask the Eviction API to evict each of its pods once."""
    node_meta = meta(node)
    name = str(node_meta.get("name"))
    started = _parse_stamp((node_meta.get("annotations") or {}).get(ANNOTATION_DRAIN_STARTED))
    if not (node.get("spec") or {}).get("unschedulable") or started is None:
        started = started or clock.utcnow()
        await client.patch(
            NODE,
            name,
            {
                "metadata": {"annotations": {ANNOTATION_DRAIN_STARTED: started.strftime(_STAMP)}},
                "spec": {"unschedulable": True},
            },
        )
    pods, _ = await client.list(POD, None, field_selector=f"spec.nodeName={name}")
    waiting = [pod for pod in pods if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    waiting = [pod for pod in waiting if _evictable(pod) or meta(pod).get("deletionTimestamp")]
    if not waiting:
        return DrainPass(empty=True)
    if (clock.utcnow() - started).total_seconds() >= timeout_s:
        log.warning("node %s: drain timed out with %d pods left; deleting it anyway", name, len(waiting))
        return DrainPass(empty=True, timed_out=True)
    blocked = []
    for pod in waiting:
        if not _evictable(pod):
            continue  # already terminating: wait for it
        pod_meta = meta(pod)
        namespace, pod_name = str(pod_meta.get("namespace")), str(pod_meta.get("name"))
        eviction = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod_name, "namespace": namespace},
        }
        try:
            await client.create_subresource(POD, pod_name, "eviction", eviction, namespace=namespace)
        except ApiError as error:
            if error.status == 429:  # a PodDisruptionBudget forbids it now; ask again next pass
                blocked.append(f"{namespace}/{pod_name}")
            elif not error.not_found:
                raise
    return DrainPass(empty=False, blocked=tuple(blocked))


async def delete_node(client: KubeClient, node: Mapping[str, Any]) -> None:
    """Delete ``node`` and release our finalizer on it (the VM goes with the pool)."""
    node_meta = meta(node)
    name = str(node_meta.get("name"))
    try:
        if not node_meta.get("deletionTimestamp"):
            await client.delete(NODE, name)
        finalizers = list(node_meta.get("finalizers") or [])
        if c.MACHINE_FINALIZER in finalizers:
            index = finalizers.index(c.MACHINE_FINALIZER)
            await json_patch(
                client,
                NODE,
                name,
                [
                    {"op": "test", "path": f"/metadata/finalizers/{index}", "value": c.MACHINE_FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                ],
            )
    except ApiError as error:
        if not error.not_found:
            raise


async def disown_node(client: KubeClient, node: Mapping[str, Any], machine_uid: str) -> None:
    """Take our finalizer and the owner reference to the Machine ``machine_uid`` off ``node``, and
    nothing else: the node is not ours to delete (a user's node that an older version claimed)."""
    node_meta = meta(node)
    name = str(node_meta.get("name"))
    operations: list[dict[str, Any]] = []
    finalizers = list(node_meta.get("finalizers") or [])
    if c.MACHINE_FINALIZER in finalizers:
        index = finalizers.index(c.MACHINE_FINALIZER)
        operations += [
            {"op": "test", "path": f"/metadata/finalizers/{index}", "value": c.MACHINE_FINALIZER},
            {"op": "remove", "path": f"/metadata/finalizers/{index}"},
        ]
    owners = list(node_meta.get("ownerReferences") or [])
    for index in reversed([i for i, ref in enumerate(owners) if ref.get("uid") == machine_uid]):
        operations += [
            {"op": "test", "path": f"/metadata/ownerReferences/{index}/uid", "value": machine_uid},
            {"op": "remove", "path": f"/metadata/ownerReferences/{index}"},
        ]
    if not operations:
        return
    try:
        await json_patch(client, NODE, name, operations)
    except ApiError as error:
        if not error.not_found:
            raise


async def drain_and_delete(
    client: KubeClient, nodes: Sequence[Mapping[str, Any]], *, clock: Clock, timeout_s: float
) -> list[DrainPass]:
    """One pass over ``nodes``: each is drained a step further, and deleted once empty. Returns the
    passes of the nodes still draining (empty: every node is deleted or being deleted)."""
    still_draining = []
    for node in nodes:
        if meta(node).get("deletionTimestamp"):
            await delete_node(client, node)  # only our finalizer left to release
            continue
        drained = await drain_pass(client, node, clock=clock, timeout_s=timeout_s)
        if drained.empty:
            await delete_node(client, node)
        else:
            still_draining.append(drained)
    return still_draining


def _parse_stamp(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
