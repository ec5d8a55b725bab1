"""The Machine controller, in karpenter's lifecycle shape: fetch the Machine from the informer, skip
the ones this provisioner does not handle, put the finalizer on before any Azure call, run the steps
on an in-memory draft (launch → registration → initialization → liveness, or termination for a
deleted Machine), write once, and return the soonest "look again" of the steps.

Pacing has one mechanism, the work queue: steps return when to look again, or leave a
``TransientError`` (with Azure's Retry-After when it named one) for the queue's backoff. Our own
writes do not wake the controller (see :func:`wakes_the_controller`), so a status write cannot make
a reconcile call Azure before its time.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gpu_provisioner import agentpool
from gpu_provisioner import conditions as cond
from gpu_provisioner.cloudprovider import CloudProvider
from gpu_provisioner.machine import liveness
from gpu_provisioner.machine.draft import Draft, meta
from gpu_provisioner.machine.initialization import Initialization, initialized_label_if_ready
from gpu_provisioner.machine.launch import ANNOTATION_FAILED_REQUEST, Launch
from gpu_provisioner.machine.nodes import NODE_INDEX, agentpool_of, json_patch
from gpu_provisioner.machine.operations import ANNOTATION_CREATE_ACCEPTED, ANNOTATION_OPERATION, OperationLedger
from gpu_provisioner.machine.registration import Registration
from gpu_provisioner.machine.termination import Termination
from gpu_provisioner.settings import ProvisionerSettings, parse_selector, selector_matches
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import (
    ApiError,
    Clock,
    EventRecorder,
    Informer,
    KubeClient,
    ObjectKey,
    Result,
    WatchEvent,
)

log = logging.getLogger(__name__)

COND_CLOUD_CONFIGURED = "CloudProviderConfigured"
"""Not a lifecycle step (Ready does not depend on it): False on every Machine while the start-up
check finds the Azure configuration wrong, so each Machine says why nothing moves."""
REASON_CONFIGURATION_ERROR = "ConfigurationError"
_OUR_ANNOTATIONS = (ANNOTATION_OPERATION, ANNOTATION_FAILED_REQUEST, ANNOTATION_CREATE_ACCEPTED)


def machine_filter(selector: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """Which Machines this provisioner handles: Kaito's, within the configured label selector."""

    def handled(machine: Mapping[str, Any]) -> bool:
        labels = meta(machine).get("labels") or {}
        return agentpool.is_kaito_machine(machine) and selector_matches(selector, labels)

    return handled


def wakes_the_controller(event: WatchEvent) -> bool:
    """A Machine event worth a reconcile: anything but our own writes (status, our annotations,
    our finalizer), which would otherwise make the next Azure call come before its time. Removing
    the failed-request annotation is the user asking for a retry now, so that one wakes."""
    if event.type != "MODIFIED" or event.old is None:
        return True
    old, new = meta(event.old), meta(event.obj)
    if new.get("deletionTimestamp") and not old.get("deletionTimestamp"):
        return True
    old_annotations = dict(old.get("annotations") or {})
    new_annotations = dict(new.get("annotations") or {})
    if ANNOTATION_FAILED_REQUEST in old_annotations and ANNOTATION_FAILED_REQUEST not in new_annotations:
        return True
    for key in _OUR_ANNOTATIONS:
        old_annotations.pop(key, None)
        new_annotations.pop(key, None)
    return (
        old_annotations != new_annotations
        or old.get("labels") != new.get("labels")
        or event.old.get("spec") != event.obj.get("spec")
    )


class MachineController:
    """Reconciles one Machine (cluster-scoped key ``ObjectKey("", name)``)."""

    def __init__(
        self,
        *,
        client: KubeClient,
        machines: Informer,
        nodes: Informer,
        cloud: CloudProvider,
        recorder: EventRecorder,
        clock: Clock,
        settings: ProvisionerSettings,
        cluster_name: str,
        configuration_problem: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.handled = machine_filter(parse_selector(settings.machine_selector))
        self._client = client
        self._machines = machines
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._configuration_problem = configuration_problem
        nodes.add_indexer(NODE_INDEX, agentpool_of)
        self.operations = OperationLedger(clock, settings.launched_cache_ttl_s)
        self.registration = Registration(
            client=client, nodes=nodes, settings=settings, labels_at_claim=initialized_label_if_ready
        )
        self.launch = Launch(
            cloud=cloud, operations=self.operations, clock=clock, settings=settings, cluster_name=cluster_name
        )
        self.initialization = Initialization(
            client=client, nodes=nodes, registration=self.registration, settings=settings
        )
        self.termination = Termination(
            client=client,
            registration=self.registration,
            cloud=cloud,
            operations=self.operations,
            clock=clock,
            settings=settings,
            cluster_name=cluster_name,
        )

    async def reconcile(self, key: ObjectKey) -> Result:
        machine = self._machines.store.get(key)
        if machine is None or not self.handled(machine):
            self.operations.release(name=key.name)  # gone (or no longer ours to handle)
            return Result()
        machine = copy.deepcopy(machine)
        if meta(machine).get("deletionTimestamp"):
            return await self._terminate(machine)
        if c.MACHINE_FINALIZER not in (meta(machine).get("finalizers") or []):
            # Before any Azure call: a Machine deleted from now on waits for its pool to go.
            machine = await self._add_finalizer(machine)
        draft = Draft(machine)
        self._mark_configuration(draft)
        delays = [
            await self.launch.reconcile(draft),
            await self.registration.reconcile(draft),
            await self.initialization.reconcile(draft),
        ]
        verdict = liveness.check(draft, now=self._clock.utcnow(), settings=self._settings)
        if isinstance(verdict, liveness.Expired):
            await self._write(draft)
            await self._expire(draft, verdict)
            return Result()
        delays.append(verdict)
        await self._write(draft)
        if draft.retry is not None:
            raise draft.retry
        return _soonest(delays)

    # --- termination ------------------------------------------------------------------------------
    async def _terminate(self, machine: dict[str, Any]) -> Result:
        if c.MACHINE_FINALIZER not in (meta(machine).get("finalizers") or []):
            return Result()
        draft = Draft(machine)
        self._mark_configuration(draft)
        outcome = await self.termination.reconcile(draft)
        if outcome is True:
            await self._remove_finalizer(draft)
            self.operations.release(uid=draft.uid)
            for kind, reason, message in draft.events:
                await self._recorder.record(machine, kind, reason, message)
            log.info("machine %s: released", draft.name, extra={"key": draft.name})
            return Result()
        await self._write(draft)
        if draft.retry is not None:
            raise draft.retry
        return _soonest([None if isinstance(outcome, bool) else outcome])

    async def _expire(self, draft: Draft, verdict: liveness.Expired) -> None:
        log.warning("machine %s: %s", draft.name, verdict.message, extra={"key": draft.name})
        await self._recorder.record(draft.machine, "Warning", verdict.reason, verdict.message)
        try:
            await self._client.delete(MACHINE, draft.name, precondition_uid=draft.uid)
        except ApiError as error:
            if not error.not_found and error.status != 409:
                raise

    # --- writing ----------------------------------------------------------------------------------
    def _mark_configuration(self, draft: Draft) -> None:
        problem = self._configuration_problem()
        if problem is not None:
            draft.mark(COND_CLOUD_CONFIGURED, cond.Mark.false(REASON_CONFIGURATION_ERROR, problem))
        elif draft.condition(COND_CLOUD_CONFIGURED) is not None:
            draft.mark(COND_CLOUD_CONFIGURED, cond.Mark.true())

    async def _write(self, draft: Draft) -> None:
        machine = draft.machine
        current_annotations = meta(machine).get("annotations") or {}
        annotation_changes = {
            key: value for key, value in draft.annotations.items() if current_annotations.get(key) != value
        }
        if annotation_changes:
            machine = await self._client.patch(MACHINE, draft.name, {"metadata": {"annotations": annotation_changes}})
            self._machines.write_through(machine)
        old_status = machine.get("status") or {}
        new_conditions = cond.apply_marks(old_status.get("conditions"), draft.marks, self._clock.utcnow())
        changes = {key: value for key, value in draft.status.items() if old_status.get(key) != value}
        if new_conditions != (old_status.get("conditions") or []):
            changes["conditions"] = new_conditions
        if changes:
            updated = await self._client.patch(MACHINE, draft.name, {"status": changes}, subresource="status")
            self._machines.write_through(updated)
            self._log_transitions(draft, old_status.get("conditions"), new_conditions)
        for kind, reason, message in draft.events:
            await self._recorder.record(machine, kind, reason, message)

    def _log_transitions(self, draft: Draft, old: Iterable[dict[str, Any]] | None, new: list[dict[str, Any]]) -> None:
        before = {str(x.get("type")): x.get("status") for x in old or []}
        for condition in new:
            if before.get(str(condition.get("type"))) != condition.get("status"):
                log.info(
                    "machine %s: %s=%s %s %s",
                    draft.name,
                    condition.get("type"),
                    condition.get("status"),
                    condition.get("reason", ""),
                    condition.get("message", ""),
                    extra={"key": draft.name},
                )

    async def _add_finalizer(self, machine: dict[str, Any]) -> dict[str, Any]:
        machine_meta = meta(machine)
        finalizers = machine_meta.get("finalizers")
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": machine_meta.get("resourceVersion")}
        ]
        if finalizers is None:
            operations.append({"op": "add", "path": "/metadata/finalizers", "value": [c.MACHINE_FINALIZER]})
        else:
            operations.append({"op": "add", "path": "/metadata/finalizers/-", "value": c.MACHINE_FINALIZER})
        updated = await json_patch(self._client, MACHINE, str(machine_meta.get("name")), operations)
        self._machines.write_through(updated)
        return updated

    async def _remove_finalizer(self, draft: Draft) -> None:
        machine_meta = meta(draft.machine)
        finalizers = list(machine_meta.get("finalizers") or [])
        index = finalizers.index(c.MACHINE_FINALIZER)
        await json_patch(
            self._client,
            MACHINE,
            draft.name,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": machine_meta.get("resourceVersion")},
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": c.MACHINE_FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ],
        )


def _soonest(delays: Iterable[float | None]) -> Result:
    return Result.soonest(*(Result(delay) for delay in delays))
