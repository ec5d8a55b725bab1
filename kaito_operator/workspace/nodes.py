"""Which existing nodes a Workspace runs on: a pure function of the nodes and the Workspace.

Candidates are Ready, schedulable nodes that match the labelSelector and whose
``node.kubernetes.io/instance-type`` equals ``resource.instanceType``. They are ordered as Kaito
orders them (preferredNodes, then the current ``status.workerNodes``, then nodes a provisioner made,
recognised by the ``kaito.sh/machine-type`` label, then by name) and the first ``count`` are taken.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kaito_operator.api import constants as c
from kaito_operator.api.workspace import Workspace
from kaito_operator.workspace.selectors import selector_matches


def node_is_ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def node_labels(node: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = (node.get("metadata") or {}).get("labels") or {}
    return labels


def node_name(node: dict[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name") or "")


def is_candidate(node: dict[str, Any], workspace: Workspace) -> bool:
    labels = node_labels(node)
    return (
        node_is_ready(node)
        and not (node.get("spec") or {}).get("unschedulable")
        and not (node.get("metadata") or {}).get("deletionTimestamp")
        and labels.get(c.LABEL_INSTANCE_TYPE) == workspace.resource.instance_type
        and selector_matches(workspace.resource.label_selector, labels)
    )


def select_nodes(nodes: Iterable[dict[str, Any]], workspace: Workspace) -> list[str]:
    """Names of up to ``count`` nodes for the workspace, best first."""
    preferred = set(workspace.resource.preferred_nodes or [])
    current = set((workspace.status.worker_nodes if workspace.status else None) or [])

    def rank(node: dict[str, Any]) -> tuple[bool, bool, bool, str]:
        name = node_name(node)
        return (
            name not in preferred,
            name not in current,
            c.LABEL_MACHINE_TYPE not in node_labels(node),
            name,
        )

    candidates = sorted((n for n in nodes if is_candidate(n, workspace)), key=rank)
    return [node_name(n) for n in candidates[: workspace.resource.count]]
