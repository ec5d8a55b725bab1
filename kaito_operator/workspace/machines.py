"""Machines (karpenter.sh/v1alpha5) for a Workspace: the manifest, and what a Machine's status says.

The manifest is Kaito v0.1's (kaito-compat.md §8): labels that tie the Machine to its Workspace and
carry the selector's labels to the new node, requirements that pick the VM size, the
``sku=gpu:NoSchedule`` taint, and the preset's disk as the storage request. Machines are
cluster-scoped and so cannot have a Workspace owner reference; the Workspace's finalizer deletes
them instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.api.workspace import Workspace
from kaito_operator.presets import catalog
from kaito_operator.workspace.selectors import implied_labels, node_requirements

GPU_TAINT: Final = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
# Reasons a provisioner gives while a Machine is simply still on its way (karpenter's registration
# and initialization steps report them as Ready=False); they are progress, not failure.
IN_PROGRESS_REASONS: Final = frozenset(
    {
        "MachineNotLaunched",
        "NodeNotFound",
        "NodeNotReady",
        "StartupTaintsExist",
        "KnownEphemeralTaintsExist",
        "ResourceNotRegistered",
    }
)


def storage_request(workspace: Workspace) -> str:
    """The preset's disk as a quantity with a unit (Kaito v0.1's falcon-40b "400" meant 400 bytes)."""
    if workspace.inference.preset is None:
        return "0"
    return f"{catalog.get(workspace.inference.preset.name).disk_gib}Gi"


def workspace_labels(workspace: Workspace) -> dict[str, str]:
    meta = workspace.metadata
    return {c.LABEL_WORKSPACE: meta["name"], c.LABEL_WORKSPACE_NAMESPACE: meta["namespace"]}


def render_machine(workspace: Workspace, name: str) -> dict[str, Any]:
    selector = workspace.resource.label_selector
    labels = {
        **implied_labels(selector),
        c.LABEL_PROVISIONER_NAME: c.PROVISIONER_NAME_DEFAULT,
        **workspace_labels(workspace),
    }
    requirements = [
        {"key": c.LABEL_INSTANCE_TYPE, "operator": "In", "values": [workspace.resource.instance_type]},
        {"key": c.LABEL_PROVISIONER_NAME, "operator": "In", "values": [c.PROVISIONER_NAME_DEFAULT]},
        {"key": c.LABEL_MACHINE_TYPE, "operator": "In", "values": ["gpu"]},
        {"key": c.LABEL_ARCH, "operator": "In", "values": ["amd64"]},
        {"key": c.LABEL_OS, "operator": "In", "values": ["linux"]},
    ]
    # The selector's expressions travel too, so a provisioner can honour them; matchLabels are
    # already labels (and single-valued In expressions, which karpenter turns into labels).
    requirements += [r for r in node_requirements(selector) if r["key"] not in labels]
    return {
        "apiVersion": MACHINE.api_version,
        "kind": MACHINE.kind,
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": requirements,
            "taints": [dict(GPU_TAINT)],
            "resources": {"requests": {"storage": storage_request(workspace)}},
        },
    }


@dataclass(frozen=True)
class MachineState:
    name: str
    node_name: str | None
    ready: bool
    deleting: bool
    failure: tuple[str, str] | None
    """(reason, message) when the provisioner reports that the Machine failed."""
    launched: bool = False
    """The provisioner has its cloud resource (an agent pool): what remains is the node joining."""
    created: datetime | None = None
    instance_type: str | None = None


def _conditions(machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(cond.get("type")): cond for cond in (machine.get("status") or {}).get("conditions") or []}


def machine_state(machine: dict[str, Any]) -> MachineState:
    conditions = _conditions(machine)
    ready = conditions.get(c.COND_READY, {})
    launched = conditions.get(c.COND_MACHINE_LAUNCHED, {})
    failure: tuple[str, str] | None = None
    if launched.get("status") == "False":
        failure = (str(launched.get("reason") or "LaunchFailed"), str(launched.get("message") or ""))
    elif ready.get("status") == "False" and ready.get("reason") and ready["reason"] not in IN_PROGRESS_REASONS:
        failure = (str(ready["reason"]), str(ready.get("message") or ""))
    meta = machine.get("metadata") or {}
    return MachineState(
        name=str(meta.get("name") or ""),
        node_name=(machine.get("status") or {}).get("nodeName") or None,
        ready=ready.get("status") == "True",
        deleting=bool(meta.get("deletionTimestamp")),
        failure=failure,
        launched=launched.get("status") == "True",
        created=parse_time(meta.get("creationTimestamp")),
        instance_type=instance_type(machine),
    )


def parse_time(value: Any) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339, ``Z``), None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def instance_type(machine: dict[str, Any]) -> str | None:
    """The VM size the Machine asks for (its single-valued instance-type requirement)."""
    for requirement in (machine.get("spec") or {}).get("requirements") or []:
        values = requirement.get("values") or []
        if requirement.get("key") == c.LABEL_INSTANCE_TYPE and requirement.get("operator") == "In" and len(values) == 1:
            return str(values[0])
    return None


def provisioning_seconds(machine: dict[str, Any]) -> float | None:
    """Seconds from the Machine's creation to its Ready condition turning True, None if not Ready."""
    ready = _conditions(machine).get(c.COND_READY) or {}
    if ready.get("status") != "True":
        return None
    created = parse_time((machine.get("metadata") or {}).get("creationTimestamp"))
    became_ready = parse_time(ready.get("lastTransitionTime"))
    if created is None or became_ready is None:
        return None
    return (became_ready - created).total_seconds()
