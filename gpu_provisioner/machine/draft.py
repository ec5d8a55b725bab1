"""The in-memory draft one Machine reconcile works on: the steps mark conditions, status fields,
annotations and Events on it, and the controller writes it once at the end."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gpu_provisioner import conditions as cond
from kaito_operator.runtime import TransientError
from kaito_operator.runtime.events import EventKind

LaunchOutcome = Literal["launched", "in_progress", "retrying", "permanent", "configuration", "not_owned", "invalid"]
"""What the launch step saw this time; liveness decides on it (only ``retrying`` can time out)."""


def meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = obj.get("metadata") or {}
    return value


def conditions_of(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


@dataclass
class Draft:
    """What one reconcile wants written."""

    machine: dict[str, Any]
    marks: dict[str, cond.Mark] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    """Annotation changes (None removes one)."""
    events: list[tuple[EventKind, str, str]] = field(default_factory=list)
    retry: TransientError | None = None
    """Set by a step whose failure the work queue should retry with its backoff (or Retry-After)."""
    launch_outcome: LaunchOutcome | None = None
    expiry: tuple[str, str] | None = None
    """(reason, message) when liveness decided the Machine must go."""

    @property
    def name(self) -> str:
        return str(meta(self.machine).get("name"))

    @property
    def uid(self) -> str:
        return str(meta(self.machine).get("uid"))

    def annotation(self, key: str) -> str | None:
        if key in self.annotations:
            return self.annotations[key]
        value = (meta(self.machine).get("annotations") or {}).get(key)
        return str(value) if value is not None else None

    def condition(self, condition_type: str) -> dict[str, Any] | None:
        return cond.find(conditions_of(self.machine), condition_type)

    def status_of(self, condition_type: str) -> cond.Status:
        mark = self.marks.get(condition_type)
        if mark is not None:
            return mark.status
        return cond.status_of(conditions_of(self.machine), condition_type)

    def launched(self) -> bool:
        return self.status_of("MachineLaunched") == "True"

    def mark(self, condition_type: str, mark: cond.Mark, *, event: str | None = None) -> None:
        """Set a condition; with ``event`` (a reason), also a Warning Event, but only when the condition
        changes, so a failure re-checked every few minutes is reported once, not every time."""
        current = self.condition(condition_type)
        changed = current is None or (
            current.get("status"),
            current.get("reason", ""),
            current.get("message", ""),
        ) != (mark.status, mark.reason, mark.message)
        self.marks[condition_type] = mark
        if event is not None and changed:
            self.events.append(("Warning", event, mark.message))
