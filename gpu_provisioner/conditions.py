"""The Machine's knative-style condition set: MachineLaunched, MachineRegistered and
MachineInitialized, and the Ready condition derived from them (pure functions on plain dicts).

Semantics (knative's "living condition set", as karpenter v1alpha5 uses it): Ready is True when
every dependent is True; when a dependent is False, Ready is False with that dependent's reason and
message; otherwise Ready is Unknown, again mirroring the first dependent that is not yet True.
"Not yet" states (launching, waiting for the node) are Unknown here, and False is kept for real
failures, so Ready=False always means "look at this", and its message says what went wrong.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from kaito_operator.api import constants as c

Status = Literal["True", "False", "Unknown"]
DEPENDENTS: tuple[str, ...] = (c.COND_MACHINE_LAUNCHED, c.COND_MACHINE_REGISTERED, c.COND_MACHINE_INITIALIZED)
MAX_MESSAGE = 800
"""gpu-provisioner truncates launch errors to 800 characters and appends "..."."""

# Reasons of karpenter v0.29 / gpu-provisioner (gpu-provisioner.md §1), plus "Launching" for the
# Unknown state while the cloud works.
REASON_LAUNCHING = "Launching"
REASON_LAUNCH_FAILED = "LaunchFailed"
REASON_NOT_LAUNCHED = "MachineNotLaunched"
REASON_NODE_NOT_FOUND = "NodeNotFound"
REASON_MULTIPLE_NODES = "MultipleNodesFound"
REASON_NODE_NOT_READY = "NodeNotReady"
REASON_STARTUP_TAINTS = "StartupTaintsExist"
REASON_RESOURCE_NOT_REGISTERED = "ResourceNotRegistered"


def trim(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "..."


@dataclass(frozen=True)
class Mark:
    """The desired state of one condition; ``reason``/``message`` are empty for True."""

    status: Status
    reason: str = ""
    message: str = ""

    @classmethod
    def true(cls) -> Mark:
        return cls("True")

    @classmethod
    def false(cls, reason: str, message: str) -> Mark:
        return cls("False", reason, trim(message))

    @classmethod
    def unknown(cls, reason: str, message: str) -> Mark:
        return cls("Unknown", reason, trim(message))


def find(conditions: Sequence[dict[str, Any]] | None, condition_type: str) -> dict[str, Any] | None:
    return next((cond for cond in conditions or [] if cond.get("type") == condition_type), None)


def status_of(conditions: Sequence[dict[str, Any]] | None, condition_type: str) -> Status:
    found = find(conditions, condition_type)
    value = found.get("status") if found else None
    return value if value in ("True", "False") else "Unknown"


def ready_mark(marks: dict[str, Mark]) -> Mark:
    """Ready from the dependents: the first False wins, then the first Unknown, else True."""
    for wanted in ("False", "Unknown"):
        for dependent in DEPENDENTS:
            mark = marks.get(dependent, Mark.unknown("", ""))
            if mark.status == wanted:
                return Mark(wanted, mark.reason, mark.message)
    return Mark.true()


def apply_marks(
    conditions: Sequence[dict[str, Any]] | None, marks: dict[str, Mark], now: datetime
) -> list[dict[str, Any]]:
    """New conditions: ``marks`` for the dependents (unmarked ones kept), Ready derived.

    ``lastTransitionTime`` moves only when a condition's status changes; conditions of other types
    (written by someone else) are kept as they are.
    """
    result = [copy.deepcopy(cond) for cond in conditions or []]
    current = {dep: _as_mark(find(result, dep)) for dep in DEPENDENTS}
    current.update(marks)
    desired = {**current, c.COND_READY: ready_mark(current)}
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for condition_type, mark in desired.items():
        existing = find(result, condition_type)
        if existing is None:
            existing = {"type": condition_type}
            result.append(existing)
        if existing.get("status") != mark.status or "lastTransitionTime" not in existing:
            existing["lastTransitionTime"] = stamp
        existing["status"] = mark.status
        for field, value in (("reason", mark.reason), ("message", mark.message)):
            if value:
                existing[field] = value
            else:
                existing.pop(field, None)
        existing.pop("severity", None)  # dependents are Error severity, written as absent
    order = {name: index for index, name in enumerate((*DEPENDENTS, c.COND_READY))}
    return sorted(result, key=lambda cond: order.get(str(cond.get("type")), len(order)))


def _as_mark(condition: dict[str, Any] | None) -> Mark:
    if condition is None:
        return Mark.unknown("", "")
    status = condition.get("status")
    return Mark(
        status if status in ("True", "False") else "Unknown",
        str(condition.get("reason") or ""),
        str(condition.get("message") or ""),
    )
