"""When a registered node counts as initialized (pure)."""

from __future__ import annotations

from typing import Any

from gpu_provisioner.machine.initialization import initialization_problem


def a_node(
    *,
    ready: str = "True",
    gpus: str | None = "2",
    taints: list[dict[str, str]] | None = None,
    instance_type: str = "Standard_NC12s_v3",
) -> dict[str, Any]:
    allocatable = {"cpu": "11", "memory": "100Gi", "pods": "110"}
    if gpus is not None:
        allocatable["nvidia.com/gpu"] = gpus
    return {
        "metadata": {
            "name": "aks-ws1-12345678-vmss000000",
            "labels": {"node.kubernetes.io/instance-type": instance_type},
        },
        "spec": {"taints": taints or []},
        "status": {"conditions": [{"type": "Ready", "status": ready}], "allocatable": allocatable},
    }


def a_machine(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "ws1", "labels": {"kaito.sh/workspace": "w"}}, "spec": spec}


def test_a_ready_gpu_node_with_gpus_registered_is_initialized() -> None:
    assert initialization_problem(a_machine(resources={"requests": {"storage": "100Gi"}}), a_node()) is None


def test_a_node_that_is_not_ready_is_not_initialized() -> None:
    assert initialization_problem(a_machine(), a_node(ready="False")) == ("NodeNotReady", "Node status is NotReady")


def test_a_gpu_node_without_registered_gpus_is_not_initialized() -> None:
    reason, message = initialization_problem(a_machine(), a_node(gpus=None)) or ("", "")
    assert reason == "ResourceNotRegistered"
    assert "nvidia.com/gpu" in message


def test_a_cpu_node_needs_no_gpus() -> None:
    assert initialization_problem(a_machine(), a_node(gpus=None, instance_type="Standard_D4s_v3")) is None


def test_requested_resources_other_than_storage_must_be_allocatable() -> None:
    machine = a_machine(resources={"requests": {"storage": "100Gi", "example.com/fpga": "1"}})
    reason, _ = initialization_problem(machine, a_node()) or ("", "")
    assert reason == "ResourceNotRegistered"


def test_startup_taints_still_on_the_node_block_initialization() -> None:
    taint = {"key": "node.example.com/booting", "effect": "NoSchedule"}
    machine = a_machine(startupTaints=[taint])
    assert initialization_problem(machine, a_node(taints=[taint])) == (
        "StartupTaintsExist",
        "StartupTaint 'node.example.com/booting' still exists",
    )
    assert initialization_problem(machine, a_node()) is None
