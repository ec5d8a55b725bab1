"""Which node events reach the Machine controller: a heartbeat that changes no status does not."""

from __future__ import annotations

import copy
from typing import Any

from gpu_provisioner.machine import node_changed
from kaito_operator.runtime import WatchEvent


def node(ready: str = "True", heartbeat: str = "2026-01-01T00:00:00Z", **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "aks-pool1-1-vmss000000", "labels": {"kubernetes.azure.com/agentpool": "pool1", **labels}},
        "spec": {"providerID": "azure:///x"},
        "status": {
            "allocatable": {"nvidia.com/gpu": "2"},
            "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat},
            ],
        },
    }


def modified(old: dict[str, Any], new: dict[str, Any]) -> WatchEvent:
    return WatchEvent("MODIFIED", new, old)


def test_a_heartbeat_is_not_a_change() -> None:
    assert not node_changed(modified(node(), node(heartbeat="2026-01-01T00:00:30Z")))


def test_readiness_labels_taints_capacity_finalizers_and_deletion_are() -> None:
    before = node()
    assert node_changed(modified(before, node(ready="False")))
    assert node_changed(modified(before, node(**{"karpenter.sh/initialized": "true"})))
    tainted = copy.deepcopy(before)
    tainted["spec"]["taints"] = [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    assert node_changed(modified(before, tainted))
    fewer = copy.deepcopy(before)
    fewer["status"]["allocatable"] = {"nvidia.com/gpu": "0"}
    assert node_changed(modified(before, fewer))
    claimed = copy.deepcopy(before)
    claimed["metadata"]["finalizers"] = ["karpenter.sh/termination"]
    assert node_changed(modified(before, claimed))
    deleting = copy.deepcopy(before)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    assert node_changed(modified(before, deleting))


def test_every_other_event_type_passes() -> None:
    for kind in ("ADDED", "DELETED", "SYNC"):
        assert node_changed(WatchEvent(kind, node(), node()))
