"""The Machine manifest (kaito-compat.md §8) and how a Machine's status is read."""

from __future__ import annotations

from typing import Any

from kaito_operator.workspace.machines import machine_state, render_machine
from tests.unit.workspace.workspace_builders import workspace


def test_machine_for_a_falcon_7b_workspace() -> None:
    ws = workspace(match_expressions=[{"key": "tier", "operator": "In", "values": ["gold", "silver"]}])
    assert render_machine(ws, "wsabc123456") == {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": "wsabc123456",
            "labels": {
                "apps": "falcon-7b",
                "karpenter.sh/provisioner-name": "default",
                "kaito.sh/workspace": "ws1",
                "kaito.sh/workspacenamespace": "team",
            },
        },
        "spec": {
            "machineTemplateRef": {"name": "wsabc123456"},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]},
                {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
                {"key": "kaito.sh/machine-type", "operator": "In", "values": ["gpu"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "50Gi"}},
        },
    }


def test_storage_is_the_preset_disk_with_a_unit_and_zero_for_templates() -> None:
    assert render_machine(workspace(preset="falcon-40b"), "m")["spec"]["resources"]["requests"] == {"storage": "400Gi"}
    assert render_machine(workspace(preset="llama-2-70b"), "m")["spec"]["resources"]["requests"] == {"storage": "158Gi"}
    template = workspace(template={"spec": {"containers": [{"name": "x", "image": "y"}]}})
    assert render_machine(template, "m")["spec"]["resources"]["requests"] == {"storage": "0"}


def _machine(*conditions: dict[str, Any], node: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "m1"}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: dict[str, Any] = {"conditions": list(conditions)}
    if node:
        status["nodeName"] = node
    return {"metadata": meta, "status": status}


def test_a_new_machine_is_neither_ready_nor_failed() -> None:
    state = machine_state({"metadata": {"name": "m1"}})
    assert (state.ready, state.failure, state.node_name, state.deleting) == (False, None, None, False)


def test_ready_machine() -> None:
    state = machine_state(_machine({"type": "Ready", "status": "True"}, node="n1"))
    assert (state.ready, state.failure, state.node_name) == (True, None, "n1")


def test_launch_failure_carries_the_providers_reason_and_message() -> None:
    state = machine_state(
        _machine({"type": "MachineLaunched", "status": "False", "reason": "LaunchFailed", "message": "quota"})
    )
    assert state.failure == ("LaunchFailed", "quota")


def test_ready_false_is_a_failure_only_with_a_reason_that_is_not_progress() -> None:
    assert machine_state(_machine({"type": "Ready", "status": "False"})).failure is None
    progress = {"type": "Ready", "status": "False", "reason": "NodeNotFound", "message": "Node not registered"}
    assert machine_state(_machine(progress)).failure is None
    broken = {"type": "Ready", "status": "False", "reason": "SKUNotAvailable", "message": "no NC12s_v3 here"}
    assert machine_state(_machine(broken)).failure == ("SKUNotAvailable", "no NC12s_v3 here")
    assert machine_state(_machine(deleting=True)).deleting
