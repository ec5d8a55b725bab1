"""Where a Machine's running Azure operation is kept: on the Machine (the annotation
``gpu-provisioner.kaito.sh/operation``, holding the poller's continuation token, so a restarted
operator resumes it) and, for the few seconds until that annotation is written, in memory keyed by
the Machine's UID (so a lost write never makes a second pool). The memory is cleared when the
Machine goes.

Once Azure accepted a create for the Machine, the annotation ``gpu-provisioner.kaito.sh/create-accepted``
says so for good (never removed): the create's operation is cleared when it fails, but a failed pool
(QuotaExceeded, AllocationFailed) may still stand with our tags, so termination must wait for Azure
to say it is gone."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Final

from gpu_provisioner.cloudprovider import Operation, OperationKind
from gpu_provisioner.machine.draft import Draft
from kaito_operator.runtime import Clock

log = logging.getLogger(__name__)

ANNOTATION_OPERATION: Final = "gpu-provisioner.kaito.sh/operation"
"""The running Azure operation (kind and continuation token), so a restart resumes it."""
ANNOTATION_CREATE_ACCEPTED: Final = "gpu-provisioner.kaito.sh/create-accepted"
"""Azure accepted a create for this Machine at least once (when it first did); never removed."""


@dataclass(frozen=True)
class _Started:
    operation: Operation
    machine_name: str
    expires_at: float


class OperationLedger:
    """The running operation of each Machine (one name per action: ``find``, ``save``, ``clear`` a
    finished one, ``release`` a Machine that went)."""

    def __init__(self, clock: Clock, ttl_s: float) -> None:
        self._clock = clock
        self._ttl_s = ttl_s
        self._started: dict[str, _Started] = {}

    def __len__(self) -> int:
        """How many Machines the memory holds (tests: empty once every Machine is gone)."""
        return len(self._started)

    def find(self, draft: Draft, kind: OperationKind) -> Operation | None:
        raw = draft.annotation(ANNOTATION_OPERATION)
        if raw:
            try:
                data = json.loads(raw)
                if data.get("kind") == kind:
                    return Operation(kind=kind, name=draft.name, token=str(data["token"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("machine %s: ignoring an unreadable %s annotation", draft.name, ANNOTATION_OPERATION)
        started = self._started.get(draft.uid)
        if started and started.operation.kind == kind and started.expires_at > self._clock.monotonic():
            return started.operation
        return None

    def save(self, draft: Draft, operation: Operation) -> None:
        draft.annotations[ANNOTATION_OPERATION] = json.dumps({"kind": operation.kind, "token": operation.token})
        if operation.kind == "create" and draft.annotation(ANNOTATION_CREATE_ACCEPTED) is None:
            draft.annotations[ANNOTATION_CREATE_ACCEPTED] = self._clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        self._started[draft.uid] = _Started(operation, draft.name, self._clock.monotonic() + self._ttl_s)

    @staticmethod
    def create_accepted(draft: Draft) -> bool:
        """Azure accepted a create for this Machine at some time (its pool may exist, even Failed)."""
        return draft.annotation(ANNOTATION_CREATE_ACCEPTED) is not None

    def clear(self, draft: Draft) -> None:
        if draft.annotation(ANNOTATION_OPERATION) is not None:
            draft.annotations[ANNOTATION_OPERATION] = None
        self._started.pop(draft.uid, None)

    def release(self, *, uid: str | None = None, name: str | None = None) -> None:
        """Forget a Machine that went (by UID, or by name when only its key is left)."""
        for key, started in list(self._started.items()):
            if key == uid or (name is not None and started.machine_name == name):
                del self._started[key]
