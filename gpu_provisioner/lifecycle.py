"""The Machine controller: turns a Kaito Machine into a one-node AKS agent pool and back.

Each reconcile runs small steps on an in-memory draft and writes once at the end (karpenter's
lifecycle shape): **launch** (owns MachineLaunched: start the create, keep its continuation token
on the Machine, look at it again later), **registration** (owns MachineRegistered: find the node by
its agent-pool label, adopt it, copy providerID/capacity), **initialization** (owns
MachineInitialized: node Ready, startup taints gone, requested resources such as nvidia.com/gpu
registered). Ready is derived from the three. A deleted Machine is **terminated**: its nodes are
deleted, then the pool (started, then looked at again), then the finalizer goes.

Nothing here waits for Azure: a reconcile sends at most a couple of requests and returns when to
look again. Permanent failures (quota, SKU not allowed, invalid request) are reported once as a
condition and a Warning Event, and the same request is not sent again until the Machine changes.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gpu_provisioner import agentpool
from gpu_provisioner import conditions as cond
from gpu_provisioner.cloudprovider import CloudProvider, InstanceSpec, Operation, OperationProgress
from gpu_provisioner.errors import (
    CloudError,
    InvalidParameters,
    NotFound,
    OperationFailed,
    OperationInProgress,
    Transient,
    Unauthorized,
    UnreadableOperation,
)
from gpu_provisioner.quantity import InvalidQuantity, parse_quantity
from gpu_provisioner.settings import ProvisionerSettings, parse_selector, selector_matches
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import (
    NODE,
    ApiError,
    Clock,
    EventRecorder,
    Informer,
    KubeClient,
    ObjectKey,
    ResourceKind,
    Result,
    TransientError,
    WatchEvent,
)
from kaito_operator.runtime.events import EventKind
from kaito_operator.vm_sizes import lookup

log = logging.getLogger(__name__)

ANNOTATION_OPERATION: Final = "gpu-provisioner.kaito.sh/operation"
"""The running Azure operation (kind and continuation token), so a restart resumes it."""
ANNOTATION_FAILED_REQUEST: Final = "gpu-provisioner.kaito.sh/failed-request"
"""Fingerprint of the request that failed permanently: not sent again while it is unchanged."""
NODE_INDEX: Final = "gpu-provisioner/agentpool"
LABEL_REGISTERED: Final = "karpenter.sh/registered"
LABEL_INITIALIZED: Final = "karpenter.sh/initialized"
FIELD_MANAGER: Final = "gpu-provisioner"
_IN_PROGRESS_STATES = ("creating", "updating", "scaling", "upgrading", "starting", "stopping")


def agentpool_of(node: Mapping[str, Any]) -> list[str]:
    """Index function: the agent pool a node belongs to (AKS's label)."""
    pool = ((node.get("metadata") or {}).get("labels") or {}).get(c.LABEL_AKS_AGENTPOOL)
    return [pool] if pool else []


def map_node_to_machine(event: WatchEvent) -> list[ObjectKey]:
    """A node of pool P concerns Machine P (pool name = Machine name)."""
    return [ObjectKey("", pool) for pool in agentpool_of(event.obj)]


def machine_filter(selector: Mapping[str, str]) -> Callable[[Mapping[str, Any]], bool]:
    """Which Machines this provisioner handles: Kaito's, within the configured label selector."""

    def handled(machine: Mapping[str, Any]) -> bool:
        labels = _meta(machine).get("labels") or {}
        return agentpool.is_kaito_machine(machine) and selector_matches(selector, labels)

    return handled


def _meta(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.get("metadata") or {}
    return meta


def _conditions(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


@dataclass
class _Draft:
    """What one reconcile wants written: condition marks, status fields, annotation changes,
    Events, and when to look again."""

    machine: dict[str, Any]
    marks: dict[str, cond.Mark] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str | None] = field(default_factory=dict)
    events: list[tuple[EventKind, str, str]] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    retry: TransientError | None = None

    @property
    def name(self) -> str:
        return str(_meta(self.machine).get("name"))

    @property
    def uid(self) -> str:
        return str(_meta(self.machine).get("uid"))

    def annotation(self, key: str) -> str | None:
        if key in self.annotations:
            return self.annotations[key]
        value = (_meta(self.machine).get("annotations") or {}).get(key)
        return str(value) if value is not None else None

    def launched(self) -> bool:
        mark = self.marks.get(c.COND_MACHINE_LAUNCHED)
        if mark is not None:
            return mark.status == "True"
        return cond.status_of(_conditions(self.machine), c.COND_MACHINE_LAUNCHED) == "True"


@dataclass
class _Remembered:
    operation: Operation
    expires_at: float


class MachineReconciler:
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
    ) -> None:
        self._handled = machine_filter(parse_selector(settings.machine_selector))
        self._client = client
        self._machines = machines
        self._nodes = nodes
        self._cloud = cloud
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._cluster_name = cluster_name
        nodes.add_indexer(NODE_INDEX, agentpool_of)
        # Operations started but perhaps not yet recorded on the Machine (a lost write must not
        # make a second pool), keyed by Machine UID.
        self._started: dict[str, _Remembered] = {}
        # Earliest time the next Azure call for a Machine may go out (Retry-After, polling pace).
        # Keeps reconciles woken by our own status writes from hitting Azure again at once.
        self._not_before: dict[tuple[str, str], float] = {}
        self._transient_failures: dict[str, int] = {}

    # --- entry point --------------------------------------------------------------------------
    async def reconcile(self, key: ObjectKey) -> Result:
        machine = self._machines.store.get(key)
        if machine is None:
            return Result()
        if not self._handled(machine):
            return Result()
        machine = copy.deepcopy(machine)
        if _meta(machine).get("deletionTimestamp"):
            return await self._terminate(machine)
        if c.MACHINE_FINALIZER not in (_meta(machine).get("finalizers") or []):
            # Before any Azure call: a Machine deleted from now on waits for its pool to go.
            machine = await self._add_finalizer(machine)
        draft = _Draft(machine)
        await self._launch(draft)
        await self._register(draft)
        self._initialize(draft)
        return await self._write(draft)

    # --- launch -------------------------------------------------------------------------------
    def _gate(self, draft: _Draft, phase: str) -> float | None:
        """Seconds to wait before the next Azure call of ``phase``, or None if it may go now."""
        remaining = self._not_before.get((draft.uid, phase), 0.0) - self._clock.monotonic()
        return remaining if remaining > 0 else None

    def _hold(self, draft: _Draft, phase: str, seconds: float, *, requeue: bool = True) -> None:
        """No Azure call for ``phase`` in the next ``seconds``; look again then (unless a retry
        error will carry the delay)."""
        self._not_before[(draft.uid, phase)] = self._clock.monotonic() + seconds
        if requeue:
            draft.requeue.append(seconds)

    def _remembered(self, draft: _Draft, kind: str) -> Operation | None:
        raw = draft.annotation(ANNOTATION_OPERATION)
        if raw:
            try:
                data = json.loads(raw)
                if data.get("kind") == kind:
                    return Operation(kind=kind, name=draft.name, token=str(data["token"]))  # type: ignore[arg-type]
            except (ValueError, KeyError, TypeError):
                log.warning("machine %s: ignoring an unreadable %s annotation", draft.name, ANNOTATION_OPERATION)
        remembered = self._started.get(draft.uid)
        if remembered and remembered.operation.kind == kind and remembered.expires_at > self._clock.monotonic():
            return remembered.operation
        return None

    def _keep(self, draft: _Draft, operation: Operation) -> None:
        draft.annotations[ANNOTATION_OPERATION] = json.dumps({"kind": operation.kind, "token": operation.token})
        self._started[draft.uid] = _Remembered(operation, self._clock.monotonic() + self._settings.launched_cache_ttl_s)

    def _drop(self, draft: _Draft) -> None:
        if draft.annotation(ANNOTATION_OPERATION) is not None:
            draft.annotations[ANNOTATION_OPERATION] = None
        self._started.pop(draft.uid, None)

    async def _launch(self, draft: _Draft) -> None:
        if draft.launched():
            return
        try:
            spec = agentpool.instance_spec(draft.machine, cluster_name=self._cluster_name, now=self._clock.utcnow())
        except InvalidParameters as error:
            self._launch_failed(draft, error, None)
            return
        request = agentpool.fingerprint(spec)
        if draft.annotation(ANNOTATION_FAILED_REQUEST) == request:
            return  # reported; waiting for the Machine to change
        wait = self._gate(draft, "launch")
        if wait is not None:
            draft.requeue.append(wait)
            return
        operation = self._remembered(draft, "create")
        try:
            progress = await self._poll_readable(draft, operation)
            if progress is None:
                await self._start_create(draft, spec)
                return
        except CloudError as error:
            self._launch_error(draft, error, request)
            return
        self._transient_failures.pop(draft.uid, None)
        if not progress.done:
            self._launching(draft, f"creating agent pool {spec.name} ({spec.vm_size})")
            self._hold(draft, "launch", self._poll_delay(progress.retry_after))
            return
        self._drop(draft)
        self._launched(draft, spec)

    async def _poll_readable(self, draft: _Draft, operation: Operation | None) -> OperationProgress | None:
        """Look at ``operation``; None when there is none to look at, or its token is one the cloud
        cannot read (e.g. written by an older SDK): then it is forgotten and the caller starts over,
        which looks at the pool first, rather than failing the Machine or retrying that token for ever."""
        if operation is None:
            return None
        try:
            return await self._cloud.poll(operation)
        except UnreadableOperation as error:
            log.warning("machine %s: forgetting the %s operation: %s", draft.name, operation.kind, error)
            self._drop(draft)
            return None

    async def _start_create(self, draft: _Draft, spec: InstanceSpec) -> None:
        # Look before PUTting: the pool may exist from a create whose token we lost (a restart
        # between the PUT and the annotation write). Then wait for it instead of sending another.
        try:
            existing = await self._cloud.get(spec.name)
        except NotFound:
            existing = None
        if existing is not None:
            state = existing.provisioning_state.lower()
            if state == "succeeded":
                self._launched(draft, spec)
                return
            if existing.deleting or state in _IN_PROGRESS_STATES:
                self._launching(
                    draft, f"agent pool {spec.name} is {existing.provisioning_state}; waiting for it to finish"
                )
                self._hold(draft, "launch", self._settings.poll_interval_s)
                return
            # Failed or Canceled: a PUT is how AKS repairs the pool.
        operation = await self._cloud.create(spec)
        self._transient_failures.pop(draft.uid, None)
        self._keep(draft, operation)
        self._launching(draft, f"creating agent pool {spec.name} ({spec.vm_size})")
        draft.events.append(("Normal", "CreatingAgentPool", f"Creating AKS agent pool {spec.name} ({spec.vm_size})"))
        self._hold(draft, "launch", self._settings.poll_interval_s)

    def _launching(self, draft: _Draft, message: str) -> None:
        draft.marks[c.COND_MACHINE_LAUNCHED] = cond.Mark.unknown(cond.REASON_LAUNCHING, message)

    def _launched(self, draft: _Draft, spec: InstanceSpec) -> None:
        draft.marks[c.COND_MACHINE_LAUNCHED] = cond.Mark.true()
        if draft.annotation(ANNOTATION_FAILED_REQUEST) is not None:
            draft.annotations[ANNOTATION_FAILED_REQUEST] = None
        draft.events.append(("Normal", "Launched", f"AKS agent pool {spec.name} is ready"))

    def _poll_delay(self, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self._settings.max_transient_retry_s)
        return self._settings.poll_interval_s

    def _launch_failed(self, draft: _Draft, error: CloudError, request: str | None) -> None:
        message = cond.trim(f"{error.reason}: creating agent pool {draft.name} failed: {error}")
        draft.marks[c.COND_MACHINE_LAUNCHED] = cond.Mark.false(cond.REASON_LAUNCH_FAILED, message)
        if request is not None:
            draft.annotations[ANNOTATION_FAILED_REQUEST] = request
        self._drop(draft)
        draft.events.append(("Warning", error.reason, message))

    def _launch_error(self, draft: _Draft, error: CloudError, request: str) -> None:
        if isinstance(error, OperationInProgress):
            self._launching(draft, f"waiting for an operation in progress on agent pool {draft.name}: {error}")
            self._hold(draft, "launch", self._poll_delay(error.retry_after))
        elif error.permanent:
            self._launch_failed(draft, error, request)
        elif isinstance(error, Unauthorized):
            message = cond.trim(f"{error.reason}: creating agent pool {draft.name} failed: {error}")
            draft.marks[c.COND_MACHINE_LAUNCHED] = cond.Mark.false(cond.REASON_LAUNCH_FAILED, message)
            draft.events.append(("Warning", error.reason, message))
            self._hold(draft, "launch", self._settings.auth_retry_interval_s)
        elif isinstance(error, NotFound):
            # The pool of the operation we were following is gone (deleted behind our back): start over.
            self._drop(draft)
            self._launching(draft, f"agent pool {draft.name} disappeared during its creation; creating it again")
            self._hold(draft, "launch", self._settings.transient_retry_s)
        else:  # Transient, OperationFailed: retry with backoff, honouring Retry-After
            if isinstance(error, OperationFailed):
                self._drop(draft)  # the next attempt sends the PUT again
            failures = self._transient_failures.get(draft.uid, 0) + 1
            self._transient_failures[draft.uid] = failures
            delay = self._poll_delay(error.retry_after)
            if error.retry_after is None:
                delay = min(
                    self._settings.transient_retry_s * 2 ** (failures - 1), self._settings.max_transient_retry_s
                )
            self._launching(draft, f"retrying in {delay:g}s after {error.reason}: {error}")
            self._hold(draft, "launch", delay, requeue=False)
            draft.retry = TransientError(str(error), reason=error.reason, retry_after=delay)

    # --- registration -------------------------------------------------------------------------
    def _nodes_of(self, name: str) -> list[dict[str, Any]]:
        return self._nodes.store.by_index(NODE_INDEX, name)

    async def _register(self, draft: _Draft) -> None:
        if not draft.launched():
            draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.unknown(
                cond.REASON_NOT_LAUNCHED, "Machine is not launched"
            )
            return
        nodes = self._nodes_of(draft.name)
        if not nodes:
            # status.nodeName is set once the node registered: missing now, it vanished.
            node_name = (draft.machine.get("status") or {}).get("nodeName")
            if node_name:
                draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.false(
                    cond.REASON_NODE_NOT_FOUND,
                    f"Node {node_name} of agent pool {draft.name} no longer exists in the cluster",
                )
            else:
                draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.unknown(
                    cond.REASON_NODE_NOT_FOUND, "Node not registered with cluster"
                )
                draft.requeue.append(self._settings.poll_interval_s)
            return
        if len(nodes) > 1:
            draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.false(
                cond.REASON_MULTIPLE_NODES, "Invariant violated, machine matched multiple nodes"
            )
            return
        node = nodes[0]
        if not (node.get("spec") or {}).get("providerID"):
            draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.unknown(
                cond.REASON_NODE_NOT_FOUND, f"Node {_meta(node).get('name')} has no providerID yet"
            )
            draft.requeue.append(self._settings.poll_interval_s)
            return
        await self._adopt(draft, node)
        node_status = node.get("status") or {}
        draft.status.update(
            {
                "providerID": node["spec"]["providerID"],
                "nodeName": _meta(node).get("name"),
                "capacity": dict(node_status.get("capacity") or {}),
                "allocatable": dict(node_status.get("allocatable") or {}),
            }
        )
        draft.marks[c.COND_MACHINE_REGISTERED] = cond.Mark.true()

    async def _adopt(self, draft: _Draft, node: dict[str, Any]) -> None:
        """Our finalizer and an owner reference to the Machine on the node, as karpenter does."""
        meta = _meta(node)
        machine_meta = _meta(draft.machine)
        finalizers = list(meta.get("finalizers") or [])
        owners = list(meta.get("ownerReferences") or [])
        labels = meta.get("labels") or {}
        owned = any(ref.get("uid") == machine_meta.get("uid") for ref in owners)
        if c.MACHINE_FINALIZER in finalizers and owned and labels.get(LABEL_REGISTERED) == "true":
            return
        if c.MACHINE_FINALIZER not in finalizers:
            finalizers.append(c.MACHINE_FINALIZER)
        if not owned:
            owners.append(
                {
                    "apiVersion": MACHINE.api_version,
                    "kind": MACHINE.kind,
                    "name": machine_meta.get("name"),
                    "uid": machine_meta.get("uid"),
                    "blockOwnerDeletion": True,
                }
            )
        patch = {
            "metadata": {
                # Merge patches replace lists whole; the resourceVersion makes this one fail with a
                # conflict (and be retried) rather than drop someone else's concurrent change.
                "resourceVersion": meta.get("resourceVersion"),
                "finalizers": finalizers,
                "ownerReferences": owners,
                "labels": {LABEL_REGISTERED: "true"},
            }
        }
        updated = await self._client.patch(NODE, str(meta.get("name")), patch)
        self._nodes.write_through(updated)

    # --- initialization -----------------------------------------------------------------------
    def _initialize(self, draft: _Draft) -> None:
        registered = draft.marks.get(c.COND_MACHINE_REGISTERED)
        if registered is None or registered.status != "True":
            reason = registered.reason if registered is not None else cond.REASON_NOT_LAUNCHED
            message = registered.message if registered is not None else "Machine is not launched"
            draft.marks[c.COND_MACHINE_INITIALIZED] = cond.Mark.unknown(reason, message)
            return
        node = self._nodes_of(draft.name)[0]
        problem = initialization_problem(draft.machine, node)
        if problem is not None:
            draft.marks[c.COND_MACHINE_INITIALIZED] = cond.Mark.unknown(*problem)
            draft.requeue.append(self._settings.poll_interval_s)
            return
        draft.marks[c.COND_MACHINE_INITIALIZED] = cond.Mark.true()

    # --- writing ------------------------------------------------------------------------------
    async def _write(self, draft: _Draft) -> Result:
        machine = draft.machine
        meta = _meta(machine)
        current_annotations = meta.get("annotations") or {}
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
            if draft.marks.get(c.COND_MACHINE_INITIALIZED, cond.Mark.unknown("", "")).status == "True":
                await self._label_initialized(draft.name)
        for kind, reason, message in draft.events:
            await self._recorder.record(machine, kind, reason, message)
        if draft.retry is not None:
            raise draft.retry
        return Result(min(draft.requeue)) if draft.requeue else Result()

    async def _label_initialized(self, name: str) -> None:
        for node in self._nodes_of(name):
            if ((_meta(node).get("labels") or {}).get(LABEL_INITIALIZED)) != "true":
                updated = await self._client.patch(
                    NODE, str(_meta(node).get("name")), {"metadata": {"labels": {LABEL_INITIALIZED: "true"}}}
                )
                self._nodes.write_through(updated)

    def _log_transitions(self, draft: _Draft, old: Iterable[dict[str, Any]] | None, new: list[dict[str, Any]]) -> None:
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
        meta = _meta(machine)
        finalizers = meta.get("finalizers")
        operations: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}
        ]
        if finalizers is None:
            operations.append({"op": "add", "path": "/metadata/finalizers", "value": [c.MACHINE_FINALIZER]})
        else:
            operations.append({"op": "add", "path": "/metadata/finalizers/-", "value": c.MACHINE_FINALIZER})
        updated = await json_patch(self._client, MACHINE, str(meta.get("name")), operations)
        self._machines.write_through(updated)
        return updated

    # --- termination --------------------------------------------------------------------------
    async def _terminate(self, machine: dict[str, Any]) -> Result:
        meta = _meta(machine)
        finalizers = list(meta.get("finalizers") or [])
        if c.MACHINE_FINALIZER not in finalizers:
            return Result()
        draft = _Draft(machine)
        await self._delete_nodes(draft.name)
        if not await self._pool_gone(draft):
            if draft.annotations:
                updated = await self._client.patch(
                    MACHINE, draft.name, {"metadata": {"annotations": draft.annotations}}
                )
                self._machines.write_through(updated)
            for kind, reason, message in draft.events:
                await self._recorder.record(machine, kind, reason, message)
            if draft.retry is not None:
                raise draft.retry
            return Result(min(draft.requeue)) if draft.requeue else Result(self._settings.poll_interval_s)
        index = finalizers.index(c.MACHINE_FINALIZER)
        await json_patch(
            self._client,
            MACHINE,
            draft.name,
            [
                {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": c.MACHINE_FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ],
        )
        self._forget(draft.uid)
        log.info("machine %s: agent pool deleted; finalizer removed", draft.name, extra={"key": draft.name})
        return Result()

    def _may_have_created(self, draft: _Draft) -> bool:
        """Whether Azure may hold a pool for this Machine: it launched, or a create of ours was
        accepted (its operation is recorded on the Machine or in memory)."""
        if cond.status_of(_conditions(draft.machine), c.COND_MACHINE_LAUNCHED) == "True":
            return True
        return self._remembered(draft, "create") is not None

    def _forget(self, uid: str) -> None:
        self._started.pop(uid, None)
        self._transient_failures.pop(uid, None)
        for phase in ("launch", "delete"):
            self._not_before.pop((uid, phase), None)

    async def _delete_nodes(self, pool: str) -> None:
        await delete_pool_nodes(self._client, self._nodes, pool)

    async def _pool_gone(self, draft: _Draft) -> bool:
        """Start or follow the pool's deletion; True once it no longer exists."""
        if agentpool.pool_name_problem(draft.name) is not None:
            return True  # no pool can have this name, so none was ever made
        wait = self._gate(draft, "delete")
        if wait is not None:
            draft.requeue.append(wait)
            return False
        try:
            progress = await self._poll_readable(draft, self._remembered(draft, "delete"))
            if progress is None:
                operation = await self._cloud.delete(draft.name)
                self._keep(draft, operation)
                draft.events.append(("Normal", "DeletingAgentPool", f"Deleting AKS agent pool {draft.name}"))
                self._hold(draft, "delete", self._settings.poll_interval_s)
                return False
        except NotFound:
            return True
        except CloudError as error:
            if isinstance(error, OperationFailed):
                self._drop(draft)  # send the DELETE again
            if isinstance(error, (Transient, OperationFailed)):
                delay = self._poll_delay(error.retry_after)
                self._hold(draft, "delete", delay, requeue=False)
                draft.retry = TransientError(str(error), reason=error.reason, retry_after=delay)
            else:  # in progress (a create AKS will not cancel), refused identity, or worse: look again later
                slow = isinstance(error, Unauthorized) or error.permanent
                if slow and not self._may_have_created(draft):
                    # Azure never accepted a create for this Machine, so there is no pool to wait
                    # for; should that be wrong (a lost write before a restart), the garbage
                    # collector removes the pool once Azure lets us in.
                    log.warning(
                        "machine %s: released without deleting an agent pool: none was ever created (%s)",
                        draft.name,
                        error,
                        extra={"key": draft.name},
                    )
                    return True
                delay = self._settings.auth_retry_interval_s if slow else self._poll_delay(error.retry_after)
                self._hold(draft, "delete", delay)
                if slow:
                    draft.events.append(
                        ("Warning", error.reason, cond.trim(f"deleting agent pool {draft.name} failed: {error}"))
                    )
            return False
        if not progress.done:
            self._hold(draft, "delete", self._poll_delay(progress.retry_after))
            return False
        return True


async def json_patch(
    client: KubeClient, kind: ResourceKind, name: str, operations: list[dict[str, Any]]
) -> dict[str, Any]:
    """A JSON patch guarded by "test" operations; a failed test (our cached copy is stale) is a
    conflict to retry once the watch brings the current object."""
    try:
        return await client.patch(kind, name, operations, patch_type="json")
    except ApiError as error:
        if error.status in (409, 422):
            raise TransientError(f"{kind} {name} changed meanwhile: {error.api_message}", reason="Conflict") from error
        raise


async def delete_pool_nodes(client: KubeClient, nodes: Informer, pool: str) -> list[str]:
    """Delete the nodes of ``pool`` and release our finalizer on them (no drain: the VM goes with
    the pool anyway). Returns the names handled."""
    handled: list[str] = []
    for node in nodes.store.by_index(NODE_INDEX, pool):
        meta = _meta(node)
        name = str(meta.get("name"))
        try:
            if not meta.get("deletionTimestamp"):
                await client.delete(NODE, name)
            finalizers = list(meta.get("finalizers") or [])
            if c.MACHINE_FINALIZER in finalizers:
                index = finalizers.index(c.MACHINE_FINALIZER)
                await json_patch(
                    client,
                    NODE,
                    name,
                    [
                        {"op": "test", "path": f"/metadata/finalizers/{index}", "value": c.MACHINE_FINALIZER},
                        {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                    ],
                )
        except ApiError as error:
            if not error.not_found:
                raise
        handled.append(name)
    return handled


def initialization_problem(machine: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why a registered node is not initialized yet (reason, message), or None (pure)."""
    node_conditions = (node.get("status") or {}).get("conditions") or []
    ready = next((x for x in node_conditions if x.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return cond.REASON_NODE_NOT_READY, "Node status is NotReady"
    node_taints = {(t.get("key"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []}
    for taint in (machine.get("spec") or {}).get("startupTaints") or []:
        if (taint.get("key"), taint.get("effect")) in node_taints:
            return cond.REASON_STARTUP_TAINTS, f"StartupTaint {taint.get('key')!r} still exists"
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    requested = dict(((machine.get("spec") or {}).get("resources") or {}).get("requests") or {})
    requested.pop("storage", None)
    labels = _meta(machine).get("labels") or {}
    vm_size = str(((node.get("metadata") or {}).get("labels") or {}).get(c.LABEL_INSTANCE_TYPE) or "")
    if labels.get(c.LABEL_MACHINE_TYPE) == "gpu" or _is_gpu_requirement(machine) or _gpu_sku(vm_size):
        requested.setdefault(c.GPU_RESOURCE, 1)
    for resource, amount in requested.items():
        if _quantity(amount) > 0 and _quantity(allocatable.get(resource, 0)) <= 0:
            return cond.REASON_RESOURCE_NOT_REGISTERED, f"Resource {resource!r} was requested but not registered"
    return None


def _quantity(value: Any) -> float:
    try:
        return float(parse_quantity(value))
    except (InvalidQuantity, TypeError, ValueError):
        return 0.0


def _is_gpu_requirement(machine: Mapping[str, Any]) -> bool:
    for requirement in (machine.get("spec") or {}).get("requirements") or []:
        if requirement.get("key") == c.LABEL_MACHINE_TYPE and "gpu" in (requirement.get("values") or []):
            return True
    return False


def _gpu_sku(vm_size: str) -> bool:
    sku = lookup(vm_size) if vm_size else None
    return sku is not None and sku.gpu_count > 0
