"""Workspace conditions computed from observations, merged, compared and turned into Events."""

from __future__ import annotations

from dataclasses import replace

from kaito_operator.workspace.machines import MachineState
from kaito_operator.workspace.status import (
    ConditionValue,
    Observation,
    compute_conditions,
    merge_conditions,
    sanitize_reason,
    status_changed,
    transitions,
)


def _by_type(conditions: list[ConditionValue]) -> dict[str, tuple[str, str, str]]:
    return {cond.type: (cond.status, cond.reason, cond.message) for cond in conditions}


def _machine(name: str, failure: tuple[str, str] | None = None, deleting: bool = False) -> MachineState:
    return MachineState(name=name, node_name=None, ready=False, deleting=deleting, failure=failure)


def test_everything_ready_uses_kaitos_reasons_and_messages() -> None:
    obs = Observation(
        generation=3,
        count=2,
        selected_nodes=("a", "b"),
        workload_exists=True,
        ready_replicas=2,
        updated_replicas=2,
        total_replicas=2,
        workload_observed=True,
    )
    assert _by_type(compute_conditions(obs)) == {
        "MachineReady": ("True", "installNodePluginsSuccess", "machines plugins have been installed successfully"),
        "ResourceReady": ("True", "workspaceResourceStatusSuccess", "workspace resource is ready"),
        "InferenceReady": ("True", "WorkspaceInferenceStatusSuccess", "Inference has been deployed successfully"),
        "WorkspaceReady": ("True", "workspaceReady", "workspace is ready"),
    }


def test_waiting_for_machines_is_unknown_not_false() -> None:
    obs = Observation(generation=1, count=2, selected_nodes=("a",), machines=(_machine("m1"),))
    got = _by_type(compute_conditions(obs))
    assert got["MachineReady"] == ("Unknown", "CreateMachinePending", "creating 1 machines")
    assert got["ResourceReady"][0:2] == ("Unknown", "workspaceResourcePending")
    assert got["InferenceReady"][0] == "Unknown"
    assert got["WorkspaceReady"][0:2] == ("Unknown", "workspacePending")


def test_a_machine_failure_becomes_resource_ready_false_with_its_reason_and_message() -> None:
    obs = Observation(
        generation=1,
        count=2,
        machines=(_machine("m2", ("LaunchFailed", "quota exceeded")), _machine("m1"), _machine("m0", ("X", "y"), True)),
    )
    got = _by_type(compute_conditions(obs))
    assert got["ResourceReady"] == ("False", "LaunchFailed", "quota exceeded")
    assert got["MachineReady"] == (
        "False",
        "checkMachineStatusFailed",
        "machine m2 failed: LaunchFailed: quota exceeded",
    )
    assert got["WorkspaceReady"] == ("False", "workspaceFailed", "quota exceeded")


def test_enough_nodes_beat_a_failed_spare_machine() -> None:
    obs = Observation(generation=1, count=1, selected_nodes=("a",), machines=(_machine("m", ("LaunchFailed", "q")),))
    assert _by_type(compute_conditions(obs))["ResourceReady"][0] == "True"


def test_a_spec_problem_fails_everything_with_its_message() -> None:
    obs = Observation(generation=1, count=1, spec_problem="Insufficient number of GPUs: ...")
    got = _by_type(compute_conditions(obs))
    assert got["ResourceReady"] == ("False", "workspaceResourceStatusFailed", "Insufficient number of GPUs: ...")
    assert got["MachineReady"][0:2] == ("False", "machineFailedCreation")
    assert got["InferenceReady"][0:2] == ("False", "WorkspaceInferenceStatusFailed")
    assert got["WorkspaceReady"] == ("False", "workspaceFailed", "Insufficient number of GPUs: ...")


def test_errors_are_in_the_messages() -> None:
    obs = Observation(generation=1, count=1, resource_error="creating machines: 500 boom")
    assert _by_type(compute_conditions(obs))["MachineReady"] == (
        "False",
        "machineFailedCreation",
        "creating machines: 500 boom",
    )
    obs = Observation(generation=1, count=1, selected_nodes=("a",), inference_error="applying workload: 503")
    got = _by_type(compute_conditions(obs))
    assert got["InferenceReady"] == ("False", "WorkspaceInferenceStatusFailed", "applying workload: 503")
    assert got["WorkspaceReady"] == ("False", "workspaceFailed", "applying workload: 503")


def test_inference_waits_for_an_up_to_date_ready_rollout() -> None:
    base = Observation(generation=1, count=2, selected_nodes=("a", "b"), workload_exists=True)
    rolling = replace(base, ready_replicas=2, updated_replicas=1, total_replicas=3, workload_observed=True)
    assert _by_type(compute_conditions(rolling))["InferenceReady"] == (
        "Unknown",
        "WorkspaceInferencePending",
        "1 of 2 inference replicas are up to date and ready",
    )
    stale = replace(base, ready_replicas=2, updated_replicas=2, total_replicas=2, workload_observed=False)
    assert _by_type(compute_conditions(stale))["InferenceReady"][0] == "Unknown"
    no_workload = Observation(generation=1, count=1, selected_nodes=("a",))
    assert _by_type(compute_conditions(no_workload))["InferenceReady"][0] == "Unknown"


def test_deleting_sets_only_workspace_deleting() -> None:
    got = compute_conditions(Observation(generation=1, count=1, deleting=True))
    assert _by_type(got) == {"WorkspaceDeleting": ("True", "workspaceDeleted", "workspace is being deleted")}


def test_merge_keeps_transition_times_of_unchanged_statuses_and_others_conditions() -> None:
    existing = [
        {"type": "Custom", "status": "True"},
        {"type": "ResourceReady", "status": "True", "reason": "a", "message": "b", "lastTransitionTime": "T0"},
        {"type": "InferenceReady", "status": "Unknown", "reason": "a", "message": "b", "lastTransitionTime": "T0"},
    ]
    desired = [
        ConditionValue("InferenceReady", "True", "r", "m"),
        ConditionValue("ResourceReady", "True", "r2", "m2"),
    ]
    merged = merge_conditions(existing, desired, generation=7, now="T1")
    assert [c["type"] for c in merged] == ["ResourceReady", "InferenceReady", "Custom"]
    assert merged[0] == {
        "type": "ResourceReady",
        "status": "True",
        "reason": "r2",
        "message": "m2",
        "observedGeneration": 7,
        "lastTransitionTime": "T0",
    }
    assert merged[1]["lastTransitionTime"] == "T1"


def test_status_changed_ignores_times_and_node_order() -> None:
    conditions = [{"type": "A", "status": "True", "reason": "r", "message": "m", "observedGeneration": 1}]
    current = {"conditions": [{**conditions[0], "lastTransitionTime": "T0"}], "workerNodes": ["b", "a"]}
    assert not status_changed(current, {"conditions": conditions, "workerNodes": ["a", "b"]})
    assert status_changed(current, {"conditions": conditions, "workerNodes": ["a"]})
    assert status_changed(
        current, {"conditions": [{**conditions[0], "observedGeneration": 2}], "workerNodes": ["a", "b"]}
    )
    assert status_changed(None, {"conditions": conditions})


def test_transitions_are_status_changes() -> None:
    before = [{"type": "A", "status": "Unknown"}, {"type": "B", "status": "True"}]
    after = [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}, {"type": "C", "status": "False"}]
    assert [c["type"] for c in transitions(before, after)] == ["A", "C"]


def test_reasons_are_made_valid() -> None:
    assert sanitize_reason("LaunchFailed") == "LaunchFailed"
    assert sanitize_reason("Quota Exceeded!") == "QuotaExceeded"
    assert sanitize_reason("404") == "Failed404"
    assert sanitize_reason("") == "Failed"
