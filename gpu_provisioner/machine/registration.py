"""Registration: owns MachineRegistered. Finds the one node of the Machine's agent pool (AKS labels
it ``kubernetes.azure.com/agentpool=<pool>``), puts our finalizer and an owner reference to the
Machine on it, as karpenter does, and copies providerID, nodeName, capacity and allocatable."""

from __future__ import annotations

from typing import Any, Final

from gpu_provisioner import conditions as cond
from gpu_provisioner.machine.draft import Draft, meta
from gpu_provisioner.machine.nodes import NODE_INDEX
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import NODE, Informer, KubeClient

LABEL_REGISTERED: Final = "karpenter.sh/registered"


class Registration:
    def __init__(self, *, client: KubeClient, nodes: Informer, settings: ProvisionerSettings) -> None:
        self._client = client
        self._nodes = nodes
        self._settings = settings

    def nodes_of(self, pool: str) -> list[dict[str, Any]]:
        return self._nodes.store.by_index(NODE_INDEX, pool)

    async def reconcile(self, draft: Draft) -> float | None:
        if not draft.launched():
            draft.mark(
                c.COND_MACHINE_REGISTERED, cond.Mark.unknown(cond.REASON_NOT_LAUNCHED, "Machine is not launched")
            )
            return None
        nodes = self.nodes_of(draft.name)
        if not nodes:
            # status.nodeName is set once the node registered: missing now, it vanished.
            node_name = (draft.machine.get("status") or {}).get("nodeName")
            if node_name:
                draft.mark(
                    c.COND_MACHINE_REGISTERED,
                    cond.Mark.false(
                        cond.REASON_NODE_NOT_FOUND,
                        f"Node {node_name} of agent pool {draft.name} no longer exists in the cluster",
                    ),
                )
                return None
            draft.mark(
                c.COND_MACHINE_REGISTERED,
                cond.Mark.unknown(cond.REASON_NODE_NOT_FOUND, "Node not registered with cluster"),
            )
            return self._settings.poll_interval_s
        if len(nodes) > 1:
            draft.mark(
                c.COND_MACHINE_REGISTERED,
                cond.Mark.false(cond.REASON_MULTIPLE_NODES, "Invariant violated, machine matched multiple nodes"),
            )
            return None
        node = nodes[0]
        if not (node.get("spec") or {}).get("providerID"):
            draft.mark(
                c.COND_MACHINE_REGISTERED,
                cond.Mark.unknown(cond.REASON_NODE_NOT_FOUND, f"Node {meta(node).get('name')} has no providerID yet"),
            )
            return self._settings.poll_interval_s
        await self._claim(draft, node)
        node_status = node.get("status") or {}
        draft.status.update(
            {
                "providerID": node["spec"]["providerID"],
                "nodeName": meta(node).get("name"),
                "capacity": dict(node_status.get("capacity") or {}),
                "allocatable": dict(node_status.get("allocatable") or {}),
            }
        )
        draft.mark(c.COND_MACHINE_REGISTERED, cond.Mark.true())
        return None

    async def _claim(self, draft: Draft, node: dict[str, Any]) -> None:
        """Our finalizer and an owner reference to the Machine on the node (written once)."""
        node_meta = meta(node)
        machine_meta = meta(draft.machine)
        finalizers = list(node_meta.get("finalizers") or [])
        owners = list(node_meta.get("ownerReferences") or [])
        labels = node_meta.get("labels") or {}
        owned = any(ref.get("uid") == machine_meta.get("uid") for ref in owners)
        if c.MACHINE_FINALIZER in finalizers and owned and labels.get(LABEL_REGISTERED) == "true":
            return
        if c.MACHINE_FINALIZER not in finalizers:
            finalizers.append(c.MACHINE_FINALIZER)
        if not owned:
            owners.append(
                {
                    "apiVersion": MACHINE.api_version,
                    "kind": MACHINE.kind,
                    "name": machine_meta.get("name"),
                    "uid": machine_meta.get("uid"),
                    "blockOwnerDeletion": True,
                }
            )
        patch = {
            "metadata": {
                # Merge patches replace lists whole; the resourceVersion makes this one fail with a
                # conflict (and be retried) rather than drop someone else's concurrent change.
                "resourceVersion": node_meta.get("resourceVersion"),
                "finalizers": finalizers,
                "ownerReferences": owners,
                "labels": {LABEL_REGISTERED: "true"},
            }
        }
        updated = await self._client.patch(NODE, str(node_meta.get("name")), patch)
        self._nodes.write_through(updated)
