"""Launch: owns MachineLaunched. Starts the agent pool's create, keeps its continuation token on the
Machine, looks at it once per reconcile, and says when to look again.

Before any PUT it looks at the pool of that name: a pool whose tags do not say "this cluster, this
Machine" is the user's and is never adopted or overwritten (MachineLaunched=False/AgentPoolNotOwned).
A permanent failure (quota, VM size not allowed, no capacity, invalid request) is reported once and
the same request is sent again at most once per ``launch_recheck_interval_s`` (the time of the last
attempt is kept on the Machine, so a restart does not reset it); removing the annotation
``gpu-provisioner.kaito.sh/failed-request`` retries at once.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Final

from gpu_provisioner import agentpool
from gpu_provisioner import conditions as cond
from gpu_provisioner.cloudprovider import CloudProvider, Instance, InstanceSpec, Operation, OperationProgress
from gpu_provisioner.errors import (
    CloudError,
    ConfigurationError,
    InvalidParameters,
    NotFound,
    OperationFailed,
    OperationInProgress,
    UnreadableOperation,
    without_volatile_parts,
)
from gpu_provisioner.machine.draft import Draft
from gpu_provisioner.machine.operations import OperationLedger
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c
from kaito_operator.runtime import Clock, TransientError

log = logging.getLogger(__name__)

ANNOTATION_FAILED_REQUEST: Final = "gpu-provisioner.kaito.sh/failed-request"
"""The request that failed permanently and when it was last sent (JSON ``{"request", "at"}``): not
sent again before ``launch_recheck_interval_s`` has passed, unless the Machine asks for something
else. Remove it to retry at once."""
REASON_NOT_OWNED: Final = "AgentPoolNotOwned"
_IN_PROGRESS_STATES = ("creating", "updating", "scaling", "upgrading", "starting", "stopping")
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def not_owned_message(name: str) -> str:
    return (
        f"agent pool {name} exists and was not created by kaito: it is left alone. Delete or rename that "
        f"pool, or give the Workspace another name so its Machine is named differently"
    )


class Launch:
    def __init__(
        self,
        *,
        cloud: CloudProvider,
        operations: OperationLedger,
        clock: Clock,
        settings: ProvisionerSettings,
        cluster_name: str,
    ) -> None:
        self._cloud = cloud
        self._operations = operations
        self._clock = clock
        self._settings = settings
        self._cluster_name = cluster_name

    async def reconcile(self, draft: Draft) -> float | None:
        """Move the launch on; returns seconds until it should be looked at again (None: a change to
        the Machine, or a retry the work queue schedules, brings it back)."""
        if draft.launched():
            draft.launch_outcome = "launched"
            return None
        try:
            spec = agentpool.instance_spec(draft.machine, cluster_name=self._cluster_name, now=self._clock.utcnow())
        except InvalidParameters as error:
            draft.launch_outcome = "invalid"
            self._failed(draft, error)
            return None
        request = agentpool.fingerprint(spec)
        wait = self._until_recheck(draft, request)
        if wait is not None:
            draft.launch_outcome = "permanent"
            return wait
        try:
            progress = await self._look(draft, self._operations.find(draft, "create"))
            if progress is None:
                return await self._start(draft, spec, request)
        except CloudError as error:
            return self._attempt_failed(draft, error, request)
        if not progress.done:
            draft.launch_outcome = "in_progress"
            self._launching(draft, f"creating agent pool {spec.name} ({spec.vm_size})")
            return self._poll_delay(progress.retry_after)
        self._operations.clear(draft)
        self._launched(draft, spec)
        return None

    # --- the steps of one launch ----------------------------------------------------------------
    async def _look(self, draft: Draft, operation: Operation | None) -> OperationProgress | None:
        """Look at ``operation``; None when there is none, or its token is one the cloud cannot read
        (e.g. written by an older SDK): then it is cleared and the caller starts over, which looks at
        the pool first."""
        if operation is None:
            return None
        try:
            return await self._cloud.poll(operation)
        except UnreadableOperation as error:
            log.warning("machine %s: clearing the create operation: %s", draft.name, error)
            self._operations.clear(draft)
            return None

    async def _start(self, draft: Draft, spec: InstanceSpec, request: str) -> float | None:
        # Look before PUTting: the pool may be the user's, or ours from a create whose token we lost.
        try:
            existing: Instance | None = await self._cloud.get(spec.name)
        except NotFound:
            existing = None
        if existing is not None:
            if not agentpool.belongs_to(existing.tags, cluster_name=self._cluster_name, machine_name=spec.name):
                draft.launch_outcome = "not_owned"
                draft.mark(
                    c.COND_MACHINE_LAUNCHED,
                    cond.Mark.false(REASON_NOT_OWNED, not_owned_message(spec.name)),
                    event=REASON_NOT_OWNED,
                )
                return self._settings.launch_recheck_interval_s
            taken_over = agentpool.made_for_another_machine(existing.tags, draft.uid)
            state = existing.provisioning_state.lower()
            if not taken_over and state == "succeeded":
                self._launched(draft, spec)
                return None
            if existing.deleting or state in _IN_PROGRESS_STATES:
                draft.launch_outcome = "in_progress"
                self._launching(
                    draft, f"agent pool {spec.name} is {existing.provisioning_state}; waiting for it to finish"
                )
                return self._settings.poll_interval_s
            # Ours and Failed/Canceled (a PUT is how AKS repairs it), or left by an earlier Machine of
            # this name (the PUT makes it this one's).
        operation = await self._cloud.create(spec)
        self._operations.save(draft, operation)
        draft.launch_outcome = "in_progress"
        self._launching(draft, f"creating agent pool {spec.name} ({spec.vm_size})")
        draft.events.append(("Normal", "CreatingAgentPool", f"Creating AKS agent pool {spec.name} ({spec.vm_size})"))
        self._remember_attempt(draft, request)
        return self._settings.poll_interval_s

    def _attempt_failed(self, draft: Draft, error: CloudError, request: str) -> float | None:
        if isinstance(error, OperationInProgress):
            draft.launch_outcome = "in_progress"
            self._launching(draft, f"waiting for an operation in progress on agent pool {draft.name}: {error}")
            return self._poll_delay(error.retry_after)
        if error.permanent:
            draft.launch_outcome = "permanent"
            self._operations.clear(draft)
            self._failed(draft, error)
            self._remember_attempt(draft, request)
            return self._settings.launch_recheck_interval_s
        if isinstance(error, ConfigurationError):
            draft.launch_outcome = "configuration"
            self._failed(draft, error)
            return self._settings.auth_retry_interval_s
        draft.launch_outcome = "retrying"
        if isinstance(error, NotFound):
            # The pool of the create we were following is gone (deleted behind our back): start over.
            self._operations.clear(draft)
            self._launching(draft, f"agent pool {draft.name} disappeared during its creation; creating it again")
            return self._settings.transient_retry_s
        if isinstance(error, OperationFailed):
            self._operations.clear(draft)  # the next attempt sends the PUT again
        # Transient, OperationFailed: the work queue retries with its backoff, or after Retry-After.
        self._launching(draft, f"retrying after {error.reason}: {error}")
        draft.retry = TransientError(str(error), reason=error.reason, retry_after=error.retry_after)
        return None

    # --- marks ------------------------------------------------------------------------------------
    def _launching(self, draft: Draft, message: str) -> None:
        draft.mark(c.COND_MACHINE_LAUNCHED, cond.Mark.unknown(cond.REASON_LAUNCHING, message))

    def _launched(self, draft: Draft, spec: InstanceSpec) -> None:
        draft.launch_outcome = "launched"
        draft.mark(c.COND_MACHINE_LAUNCHED, cond.Mark.true())
        if draft.annotation(ANNOTATION_FAILED_REQUEST) is not None:
            draft.annotations[ANNOTATION_FAILED_REQUEST] = None
        draft.events.append(("Normal", "Launched", f"AKS agent pool {spec.name} is ready"))

    def _failed(self, draft: Draft, error: CloudError) -> None:
        message = without_volatile_parts(f"{error.reason}: creating agent pool {draft.name} failed: {error}")
        if error.permanent and not isinstance(error, InvalidParameters):
            message += (
                f" (sent again every {self._settings.launch_recheck_interval_s:g}s; remove the annotation "
                f"{ANNOTATION_FAILED_REQUEST} to retry now)"
            )
        draft.mark(c.COND_MACHINE_LAUNCHED, cond.Mark.false(cond.REASON_LAUNCH_FAILED, message), event=error.reason)

    # --- pacing of permanent failures ---------------------------------------------------------------
    def _remember_attempt(self, draft: Draft, request: str) -> None:
        draft.annotations[ANNOTATION_FAILED_REQUEST] = json.dumps(
            {"request": request, "at": self._clock.utcnow().strftime(_STAMP)}
        )

    def _until_recheck(self, draft: Draft, request: str) -> float | None:
        """Seconds until the same request that failed permanently may be sent again; None: now."""
        if draft.status_of(c.COND_MACHINE_LAUNCHED) != "False":
            return None  # the last attempt did not fail for good (or its result is not reported yet)
        raw = draft.annotation(ANNOTATION_FAILED_REQUEST)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            last = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
            same = data["request"] == request
        except (ValueError, KeyError, TypeError):
            return None  # unreadable (e.g. an older format): retry now
        if not same:
            return None
        remaining = self._settings.launch_recheck_interval_s - (self._clock.utcnow() - last).total_seconds()
        return remaining if remaining > 0 else None

    def _poll_delay(self, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self._settings.max_transient_retry_s)
        return self._settings.poll_interval_s
