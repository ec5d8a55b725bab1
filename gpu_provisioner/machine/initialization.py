"""Initialization: owns MachineInitialized. The registered node must be Ready, free of the
Machine's startup taints, and have every requested resource (but storage) allocatable, with
``nvidia.com/gpu`` for GPU sizes; then it gets ``karpenter.sh/initialized=true``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from gpu_provisioner import conditions as cond
from gpu_provisioner.machine.draft import Draft, meta
from gpu_provisioner.machine.registration import Registration
from gpu_provisioner.quantity import InvalidQuantity, parse_quantity
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c
from kaito_operator.runtime import NODE, Informer, KubeClient
from kaito_operator.vm_sizes import lookup

LABEL_INITIALIZED: Final = "karpenter.sh/initialized"


class Initialization:
    def __init__(
        self, *, client: KubeClient, nodes: Informer, registration: Registration, settings: ProvisionerSettings
    ) -> None:
        self._client = client
        self._nodes = nodes
        self._registration = registration
        self._settings = settings

    async def reconcile(self, draft: Draft) -> float | None:
        registered = draft.marks.get(c.COND_MACHINE_REGISTERED)
        if registered is None or registered.status != "True":
            reason = registered.reason if registered is not None else cond.REASON_NOT_LAUNCHED
            message = registered.message if registered is not None else "Machine is not launched"
            draft.mark(c.COND_MACHINE_INITIALIZED, cond.Mark.unknown(reason, message))
            return None
        node = self._registration.nodes_of(draft.name)[0]
        problem = initialization_problem(draft.machine, node)
        if problem is not None:
            draft.mark(c.COND_MACHINE_INITIALIZED, cond.Mark.unknown(*problem))
            return self._settings.poll_interval_s
        if (meta(node).get("labels") or {}).get(LABEL_INITIALIZED) != "true":
            updated = await self._client.patch(
                NODE, str(meta(node).get("name")), {"metadata": {"labels": {LABEL_INITIALIZED: "true"}}}
            )
            self._nodes.write_through(updated)
        draft.mark(c.COND_MACHINE_INITIALIZED, cond.Mark.true())
        return None


def initialization_problem(machine: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a registered node is not initialized yet (reason, message), or None (pure)."""
    node_conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((x for x in node_conditions if x.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return cond.REASON_NODE_NOT_READY, "Node status is NotReady"
    node_taints = {(t.get("key"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []}
    for taint in (machine.get("spec") or {}).get("startupTaints") or []:
        if (taint.get("key"), taint.get("effect")) in node_taints:
            return cond.REASON_STARTUP_TAINTS, f"StartupTaint {taint.get('key')!r} still exists"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    requested = dict(((machine.get("spec") or {}).get("resources") or {}).get("requests") or {})
    requested.pop("storage", None)
    labels = meta(machine).get("labels") or {}
    vm_size = str((meta(node).get("labels") or {}).get(c.LABEL_INSTANCE_TYPE) or "")
    if labels.get(c.LABEL_MACHINE_TYPE) == "gpu" or _is_gpu_requirement(machine) or _gpu_sku(vm_size):
        requested.setdefault(c.GPU_RESOURCE, 1)
    for resource, amount in requested.items():
        if _quantity(amount) > 0 and _quantity(allocatable.get(resource, 0)) <= 0:
            return cond.REASON_RESOURCE_NOT_REGISTERED, f"Resource {resource!r} was requested but not registered"
    return None


def _quantity(value: Any) -> float:
    try:
        return float(parse_quantity(value))
    except (InvalidQuantity, TypeError, ValueError):
        return 0.0


def _is_gpu_requirement(machine: Mapping[str, Any]) -> bool:
    for requirement in (machine.get("spec") or {}).get("requirements") or []:
        if requirement.get("key") == c.LABEL_MACHINE_TYPE and "gpu" in (requirement.get("values") or []):
            return True
    return False


def _gpu_sku(vm_size: str) -> bool:
    sku = lookup(vm_size) if vm_size else None
    return sku is not None and sku.gpu_count > 0
