"""The Workspace's phase, derived from Machines and pods as the provisioner and the kubelet write them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kaito_operator.api.workspace import PHASES
from kaito_operator.workspace.machines import machine_state
from kaito_operator.workspace.pods import pod_state
from kaito_operator.workspace.status import (
    ESTIMATE_STEP,
    Observation,
    compute_conditions,
    compute_phase,
    expected_ready_field,
    status_changed,
)


def _machine(*conditions: tuple[str, str, str], node: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "conditions": [{"type": kind, "status": value, "reason": reason} for kind, value, reason in conditions]
    }
    if node:
        status["nodeName"] = node
    return {"metadata": {"name": "ws0", "creationTimestamp": "2024-05-01T12:00:00Z"}, "status": status}


def _pod(
    *, scheduled: bool = True, waiting: str | None = None, running: bool = False, ready: bool = False
) -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True" if scheduled else "False"}]
    conditions.append({"type": "Ready", "status": "True" if ready else "False"})
    status: dict[str, Any] = {"phase": "Running" if running else "Pending", "conditions": conditions}
    if waiting:
        status["containerStatuses"] = [{"name": "model", "state": {"waiting": {"reason": waiting}}}]
    elif running:
        status["containerStatuses"] = [{"name": "model", "state": {"running": {"startedAt": "x"}}}]
    return {"metadata": {"name": "ws-abc"}, "spec": {"nodeName": "n1"} if scheduled else {}, "status": status}


def _phase(**fields: Any) -> str:
    obs = Observation(generation=1, count=1, **fields)
    return compute_phase(obs, compute_conditions(obs))


def _deployed(*pods: dict[str, Any], ready: int = 0) -> dict[str, Any]:
    return {
        "selected_nodes": ("n1",),
        "workload_exists": True,
        "ready_replicas": ready,
        "updated_replicas": 1,
        "total_replicas": 1,
        "workload_observed": True,
        "pods": tuple(pod_state(p) for p in pods),
    }


def test_a_new_workspace_waits_for_its_agent_pool_until_the_machine_is_launched() -> None:
    assert _phase() == "WaitingForAgentPool"  # its Machine not even made yet
    launching = _machine(("MachineLaunched", "Unknown", "Launching"))
    assert _phase(machines=(machine_state(launching),)) == "WaitingForAgentPool"


def test_a_launched_machine_whose_node_is_not_ready_is_a_node_joining() -> None:
    launched = _machine(("MachineLaunched", "True", ""), ("Ready", "False", "NodeNotReady"), node="aks-ws0-1")
    assert _phase(machines=(machine_state(launched),)) == "NodeJoining"


def test_pod_steps_follow_the_kubelets_states() -> None:
    assert _phase(**_deployed()) == "Scheduling"  # the Deployment made no pod yet
    assert _phase(**_deployed(_pod(scheduled=False))) == "Scheduling"
    assert _phase(**_deployed(_pod(waiting="ContainerCreating"))) == "PullingImage"
    assert _phase(**_deployed(_pod(waiting="ImagePullBackOff"))) == "PullingImage"
    assert _phase(**_deployed(_pod(running=True))) == "LoadingModel"
    assert _phase(**_deployed(_pod(waiting="CrashLoopBackOff"))) == "LoadingModel"
    assert _phase(**_deployed(_pod(running=True, ready=True), ready=1)) == "Serving"


def test_the_slowest_replica_sets_the_phase() -> None:
    fields = _deployed(_pod(running=True, ready=True), _pod(waiting="ContainerCreating"), ready=1)
    obs = Observation(generation=1, count=2, **{**fields, "selected_nodes": ("n1", "n2")})
    assert compute_phase(obs, compute_conditions(obs)) == "PullingImage"


def test_failure_and_deletion_override_progress() -> None:
    failed = _machine(("MachineLaunched", "False", "LaunchFailed"))
    assert _phase(machines=(machine_state(failed),)) == "Failed"
    assert _phase(spec_problem="instance type too small") == "Failed"
    assert _phase(deleting=True) == "Deleting"


def test_the_phases_in_order_are_the_documented_path() -> None:
    assert PHASES == (
        "WaitingForAgentPool",
        "NodeJoining",
        "Scheduling",
        "PullingImage",
        "LoadingModel",
        "Serving",
    )


def test_the_estimate_is_kept_while_provisioning_moved_only_by_a_step_and_dropped_after() -> None:
    stored = "2024-05-01T12:05:00Z"
    nearly = datetime(2024, 5, 1, 12, 5, 0, tzinfo=UTC) + ESTIMATE_STEP / 2
    assert expected_ready_field(stored, nearly, "NodeJoining") == stored
    moved = datetime(2024, 5, 1, 12, 8, 0, tzinfo=UTC)
    assert expected_ready_field(stored, moved, "WaitingForAgentPool") == "2024-05-01T12:08:00Z"
    assert expected_ready_field(stored, moved, "Scheduling") is None
    assert expected_ready_field(None, None, "WaitingForAgentPool") is None


def test_a_phase_change_alone_is_a_status_change() -> None:
    conditions = [{"type": "WorkspaceReady", "status": "Unknown", "reason": "r", "message": "m"}]
    before = {"conditions": conditions, "phase": "PullingImage"}
    assert status_changed(before, {"conditions": conditions, "phase": "LoadingModel"})
    assert not status_changed(before, {"conditions": conditions, "phase": "PullingImage"})
