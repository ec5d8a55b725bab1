"""Workspace status, computed in one place from what the reconcile observed. Pure functions only.

``compute_conditions(observation)`` derives every condition from a snapshot (nodes chosen,
Machines, the workload's readiness, errors met on the way); ``merge_conditions`` folds them into
the stored list, keeping ``lastTransitionTime`` when a status did not change and stamping
``observedGeneration``; ``status_changed`` says whether anything needs writing at all.

Condition types, the True/False reasons and Kaito's messages are Kaito v0.1's (kaito-compat.md §3).
Kaito blocked until a step finished and so never had an "in progress" state; here an unfinished
step is ``Unknown`` with a ``...Pending`` reason, and ``False`` always means something failed.
A Machine's failure is passed through with the provisioner's own reason and message.

``compute_phase`` says in one word where the Workspace is (``PHASES``, in the order a Workspace
goes through them), from the same observation plus the Machines' and pods' progress; while nodes
are being provisioned, ``nodes_expected_ready`` (from the estimator) becomes
``status.nodesExpectedReadyTime``, rewritten only when it moves by ``ESTIMATE_STEP`` or more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from kaito_operator.api import constants as c
from kaito_operator.api.workspace import (
    PHASE_DELETING,
    PHASE_FAILED,
    PHASE_LOADING_MODEL,
    PHASE_NODE_JOINING,
    PHASE_PULLING_IMAGE,
    PHASE_SCHEDULING,
    PHASE_SERVING,
    PHASE_WAITING_FOR_AGENT_POOL,
)
from kaito_operator.workspace.machines import MachineState, parse_time
from kaito_operator.workspace.pods import PodStage, PodState

Status = Literal["True", "False", "Unknown"]

CONDITION_ORDER: Final = (
    c.COND_MACHINE_READY,
    c.COND_RESOURCE_READY,
    c.COND_INFERENCE_READY,
    c.COND_WORKSPACE_READY,
    c.COND_WORKSPACE_DELETING,
)

# Kaito v0.1 reasons and messages.
REASON_MACHINE_PENDING: Final = "CreateMachinePending"
REASON_MACHINE_SUCCESS: Final = "installNodePluginsSuccess"
MESSAGE_MACHINE_SUCCESS: Final = "machines plugins have been installed successfully"
REASON_MACHINE_CREATE_FAILED: Final = "machineFailedCreation"
REASON_MACHINE_STATUS_FAILED: Final = "checkMachineStatusFailed"
REASON_RESOURCE_SUCCESS: Final = "workspaceResourceStatusSuccess"
MESSAGE_RESOURCE_SUCCESS: Final = "workspace resource is ready"
REASON_RESOURCE_FAILED: Final = "workspaceResourceStatusFailed"
REASON_INFERENCE_SUCCESS: Final = "WorkspaceInferenceStatusSuccess"
MESSAGE_INFERENCE_SUCCESS: Final = "Inference has been deployed successfully"
REASON_INFERENCE_FAILED: Final = "WorkspaceInferenceStatusFailed"
REASON_WORKSPACE_READY: Final = "workspaceReady"
MESSAGE_WORKSPACE_READY: Final = "workspace is ready"
REASON_WORKSPACE_FAILED: Final = "workspaceFailed"
REASON_DELETING: Final = "workspaceDeleted"
MESSAGE_DELETING: Final = "workspace is being deleted"
# Ours, for work in progress.
REASON_RESOURCE_PENDING: Final = "workspaceResourcePending"
REASON_INFERENCE_PENDING: Final = "WorkspaceInferencePending"
REASON_WORKSPACE_PENDING: Final = "workspacePending"

ESTIMATE_STEP: Final = timedelta(seconds=15)
"""A new estimate closer than this to the stored one is not written (no write per reconcile)."""
_STAGE_PHASE: Final = {
    PodStage.SCHEDULING: PHASE_SCHEDULING,
    PodStage.STARTING: PHASE_PULLING_IMAGE,
    PodStage.LOADING: PHASE_LOADING_MODEL,
    # Every pod Ready but the workload not yet counted as such (its controller has not caught up).
    PodStage.READY: PHASE_LOADING_MODEL,
}

_REASON_CHARS = re.compile(r"[^A-Za-z0-9_,:]")
_MAX_MESSAGE = 32768


@dataclass(frozen=True)
class ConditionValue:
    type: str
    status: Status
    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """Everything the status depends on, gathered by one reconcile."""

    generation: int
    count: int
    selected_nodes: tuple[str, ...] = ()
    machines: tuple[MachineState, ...] = ()
    deleting: bool = False
    spec_problem: str | None = None
    """Why the spec cannot be served at all (the preset does not fit the instance type, ...)."""
    resource_error: str | None = None
    """An error met while creating Machines (retried)."""
    workload_exists: bool = False
    ready_replicas: int = 0
    updated_replicas: int = 0
    total_replicas: int = 0
    workload_observed: bool = False
    """The workload controller has seen the latest spec (observedGeneration ≥ generation)."""
    inference_error: str | None = None
    """An error met while applying the workload or the Service."""
    inference_failure: str | None = field(default=None)
    """Why the workload's pods cannot start (e.g. the API server rejected the template)."""
    pods: tuple[PodState, ...] = ()
    """The workload's pods (not those terminating)."""
    nodes_expected_ready: datetime | None = None
    """When the Machines being provisioned should be Ready, from the durations observed so far."""


def sanitize_reason(reason: str) -> str:
    """metav1.Condition reasons must match ``^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$``."""
    cleaned = _REASON_CHARS.sub("", reason).strip(",:")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = "Failed" + cleaned
    return cleaned[:1024]


def _resource_conditions(obs: Observation) -> tuple[ConditionValue, ConditionValue]:
    if obs.spec_problem is not None:
        return (
            ConditionValue(c.COND_MACHINE_READY, "False", REASON_MACHINE_CREATE_FAILED, obs.spec_problem),
            ConditionValue(c.COND_RESOURCE_READY, "False", REASON_RESOURCE_FAILED, obs.spec_problem),
        )
    if len(obs.selected_nodes) >= obs.count:
        return (
            ConditionValue(c.COND_MACHINE_READY, "True", REASON_MACHINE_SUCCESS, MESSAGE_MACHINE_SUCCESS),
            ConditionValue(c.COND_RESOURCE_READY, "True", REASON_RESOURCE_SUCCESS, MESSAGE_RESOURCE_SUCCESS),
        )
    failed = sorted((m.name, m.failure) for m in obs.machines if m.failure is not None and not m.deleting)
    if failed:
        name, (reason, message) = failed[0]
        return (
            ConditionValue(
                c.COND_MACHINE_READY,
                "False",
                REASON_MACHINE_STATUS_FAILED,
                f"machine {name} failed: {reason}: {message}",
            ),
            ConditionValue(c.COND_RESOURCE_READY, "False", sanitize_reason(reason), message or reason),
        )
    if obs.resource_error is not None:
        return (
            ConditionValue(c.COND_MACHINE_READY, "False", REASON_MACHINE_CREATE_FAILED, obs.resource_error),
            ConditionValue(c.COND_RESOURCE_READY, "False", REASON_RESOURCE_FAILED, obs.resource_error),
        )
    missing = obs.count - len(obs.selected_nodes)
    return (
        ConditionValue(c.COND_MACHINE_READY, "Unknown", REASON_MACHINE_PENDING, f"creating {missing} machines"),
        ConditionValue(
            c.COND_RESOURCE_READY,
            "Unknown",
            REASON_RESOURCE_PENDING,
            f"waiting for {missing} of {obs.count} nodes to be ready",
        ),
    )


def _inference_condition(obs: Observation) -> ConditionValue:
    if obs.spec_problem is not None:
        return ConditionValue(c.COND_INFERENCE_READY, "False", REASON_INFERENCE_FAILED, obs.spec_problem)
    if obs.inference_failure is not None:
        return ConditionValue(c.COND_INFERENCE_READY, "False", REASON_INFERENCE_FAILED, obs.inference_failure)
    if obs.inference_error is not None:
        return ConditionValue(c.COND_INFERENCE_READY, "False", REASON_INFERENCE_FAILED, obs.inference_error)
    if not obs.workload_exists:
        return ConditionValue(
            c.COND_INFERENCE_READY, "Unknown", REASON_INFERENCE_PENDING, "waiting for the nodes before deploying"
        )
    ready = min(obs.ready_replicas, obs.updated_replicas)
    if obs.workload_observed and ready >= obs.count and obs.total_replicas == obs.count:
        return ConditionValue(c.COND_INFERENCE_READY, "True", REASON_INFERENCE_SUCCESS, MESSAGE_INFERENCE_SUCCESS)
    return ConditionValue(
        c.COND_INFERENCE_READY,
        "Unknown",
        REASON_INFERENCE_PENDING,
        f"{ready} of {obs.count} inference replicas are up to date and ready",
    )


def compute_conditions(obs: Observation) -> list[ConditionValue]:
    """The conditions the workspace should have now, in display order."""
    if obs.deleting:
        return [ConditionValue(c.COND_WORKSPACE_DELETING, "True", REASON_DELETING, MESSAGE_DELETING)]
    machine, resource = _resource_conditions(obs)
    inference = _inference_condition(obs)
    if resource.status == "True" and inference.status == "True":
        workspace = ConditionValue(c.COND_WORKSPACE_READY, "True", REASON_WORKSPACE_READY, MESSAGE_WORKSPACE_READY)
    elif resource.status == "False" or inference.status == "False":
        failed = resource if resource.status == "False" else inference
        workspace = ConditionValue(c.COND_WORKSPACE_READY, "False", REASON_WORKSPACE_FAILED, failed.message)
    else:
        pending = resource if resource.status != "True" else inference
        workspace = ConditionValue(c.COND_WORKSPACE_READY, "Unknown", REASON_WORKSPACE_PENDING, pending.message)
    return [machine, resource, inference, workspace]


def compute_phase(obs: Observation, conditions: Sequence[ConditionValue]) -> str:
    """Where the Workspace is, given the conditions ``compute_conditions`` derived from ``obs``."""
    status = {cond.type: cond.status for cond in conditions}
    if obs.deleting:
        return PHASE_DELETING
    if "False" in status.values():
        return PHASE_FAILED
    if status.get(c.COND_WORKSPACE_READY) == "True":
        return PHASE_SERVING
    if status.get(c.COND_RESOURCE_READY) != "True":
        active = [m for m in obs.machines if not m.deleting]
        # Fewer Machines than missing nodes: some are still to be made, their pools not asked for.
        missing = obs.count - len(obs.selected_nodes)
        pending = [m for m in active if m.node_name is None or m.node_name not in obs.selected_nodes]
        if len(pending) < missing or any(not m.launched for m in pending):
            return PHASE_WAITING_FOR_AGENT_POOL
        return PHASE_NODE_JOINING
    if len(obs.pods) < obs.count:
        return PHASE_SCHEDULING
    slowest = min(pod.stage for pod in obs.pods)
    return _STAGE_PHASE[slowest]


def expected_ready_field(current: str | None, estimate: datetime | None, phase: str) -> str | None:
    """``status.nodesExpectedReadyTime``: kept while nodes are provisioned, moved only by a real step."""
    if estimate is None or phase not in (PHASE_WAITING_FOR_AGENT_POOL, PHASE_NODE_JOINING):
        return None
    stored = parse_time(current)
    if stored is not None and abs(stored - estimate) < ESTIMATE_STEP:
        return current
    return estimate.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[dict[str, Any]], desired: Sequence[ConditionValue], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """``existing`` updated with ``desired``; conditions not in ``desired`` are kept as they are."""
    by_type = {str(cond.get("type")): dict(cond) for cond in existing}
    for want in desired:
        old = by_type.get(want.type)
        unchanged = old is not None and old.get("status") == want.status and old.get("lastTransitionTime")
        by_type[want.type] = {
            "type": want.type,
            "status": want.status,
            "reason": sanitize_reason(want.reason),
            "message": want.message[:_MAX_MESSAGE],
            "observedGeneration": generation,
            "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else now,
        }
    ordered = [by_type.pop(kind) for kind in CONDITION_ORDER if kind in by_type]
    return ordered + [by_type[kind] for kind in sorted(by_type)]


def _comparable(conditions: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted(
        (
            str(cond.get("type")),
            cond.get("status"),
            cond.get("reason"),
            cond.get("message"),
            cond.get("observedGeneration"),
        )
        for cond in conditions
    )


def status_changed(current: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """True when conditions (ignoring transition times), the phase, the estimate or the sorted worker
    nodes differ."""
    current = current or {}
    if _comparable(current.get("conditions") or []) != _comparable(desired.get("conditions") or []):
        return True
    if any(current.get(name) != desired.get(name) for name in ("phase", "nodesExpectedReadyTime")):
        return True
    return sorted(current.get("workerNodes") or []) != sorted(desired.get("workerNodes") or [])


def transitions(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conditions of ``after`` whose status differs from ``before`` (or that are new): phase changes."""
    old = {str(cond.get("type")): cond.get("status") for cond in before}
    return [cond for cond in after if old.get(str(cond.get("type"))) != cond.get("status")]
