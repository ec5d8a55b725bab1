"""Builders for workspace unit tests: a Workspace and Nodes from partial overrides."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.workspace import Workspace

UID = "6c0f7c8e-2b1a-4a55-9d2c-0e6f3c1d2a90"


def workspace(
    *,
    name: str = "ws1",
    namespace: str = "team",
    count: int = 1,
    instance_type: str = "Standard_NC12s_v3",
    match_labels: dict[str, str] | None = None,
    match_expressions: list[dict[str, Any]] | None = None,
    preset: str | None = "falcon-7b",
    preset_extra: dict[str, Any] | None = None,
    template: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    preferred_nodes: list[str] | None = None,
    worker_nodes: list[str] | None = None,
) -> Workspace:
    selector: dict[str, Any] = {"matchLabels": match_labels if match_labels is not None else {"apps": "falcon-7b"}}
    if match_expressions is not None:
        selector["matchExpressions"] = match_expressions
    resource: dict[str, Any] = {"count": count, "instanceType": instance_type, "labelSelector": selector}
    if preferred_nodes is not None:
        resource["preferredNodes"] = preferred_nodes
    inference: dict[str, Any] = {}
    if template is not None:
        inference["template"] = template
    elif preset is not None:
        inference["preset"] = {"name": preset, **(preset_extra or {})}
    obj: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": UID,
            "generation": 1,
            "annotations": annotations or {},
        },
        "resource": resource,
        "inference": inference,
    }
    if worker_nodes is not None:
        obj["status"] = {"workerNodes": worker_nodes}
    return Workspace.model_validate(obj)


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    instance_type: str | None = "Standard_NC12s_v3",
    ready: bool = True,
    unschedulable: bool = False,
) -> dict[str, Any]:
    all_labels = {"apps": "falcon-7b", **(labels or {})}
    if instance_type is not None:
        all_labels["node.kubernetes.io/instance-type"] = instance_type
    return {
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }
