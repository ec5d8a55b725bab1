"""The Workspace reconciler: from a Workspace to nodes, a TGI workload, a Service and a status.

One reconcile, level-triggered and idempotent:
1. Deleted? Mark ``WorkspaceDeleting``, delete this workspace's Machines, and remove our finalizer
   once the Machine informer shows them gone (their delete events bring the key back; no polling).
   The Deployment and Service go by owner reference.
2. Add our finalizer (only ours; others' are never touched).
3. A Workspace the admission rules refuse (a preset that cannot fit the instance type, a count
   over the limit) is a permanent problem: conditions + a Warning Event, no Machines, no retry
   until the Workspace changes. Only before anything was made for it: once it has Machines or a
   Deployment, a rule changed since (lower limit, upgrade) is one Warning Event and it is served on.
4. Choose nodes from the Node cache (not those of Machines being deleted); for the shortfall,
   create Machines concurrently under deterministic names (a restart finds them instead of making
   more). A Machine deleted or being deleted (by anyone: a user, the provisioner's liveness
   timeout) is replaced at once by the lowest free name; a terminating one keeps its name taken.
   Readiness arrives by watch; a Machine that reports failure stays (its provisioner re-checks it)
   and fails ``ResourceReady`` with its reason and message.
5. Apply the Service always and the Deployment once the nodes are ready (or when it already
   exists), by server-side apply when the rendered intent changed; otherwise compare the live
   object with the intent (runtime/drift.py) and patch back only the fields someone changed.
6. Compute every condition and the phase from what was observed (status.py: Machines, nodes, the
   Deployment, its pods) and write the status subresource only when something changed; a
   condition's transition is also a Kubernetes Event. While Machines are provisioned, the status
   says when they should be Ready, from the creation → Ready durations this operator has seen
   (estimate.py, learnt from the Machine watch).
A write the API server refuses (403 Forbidden, 422 Invalid: RBAC, an admission policy, a quota)
becomes a False condition with the server's message, looked at again after ``refused_retry``
seconds, not retried with backoff. Nothing here waits: everything that takes time is a watched object.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.api.workspace import Workspace
from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.controller import Controller, Result
from kaito_operator.runtime.drift import find_drift, restore_patch
from kaito_operator.runtime.errors import ApiError, PermanentError, TransientError
from kaito_operator.runtime.events import EventRecorder
from kaito_operator.runtime.informer import Informer, WatchEvent
from kaito_operator.runtime.kinds import DEPLOYMENT, NODE, POD, SERVICE, ObjectKey, ResourceKind, key_of
from kaito_operator.runtime.manager import Manager
from kaito_operator.runtime.mapping import Mapper, map_by_labels, map_to_owner
from kaito_operator.workspace.dry_run import dry_run_workload
from kaito_operator.workspace.estimate import ProvisioningEstimator
from kaito_operator.workspace.machines import (
    MachineState,
    instance_type,
    machine_state,
    provisioning_seconds,
    render_machine,
)
from kaito_operator.workspace.names import FIELD_MANAGER, machine_names, workload_name
from kaito_operator.workspace.nodes import is_candidate, node_is_ready, node_labels, node_name, select_nodes
from kaito_operator.workspace.pods import is_terminating, pod_state
from kaito_operator.workspace.service import (
    PUBLIC_WITHOUT_KEY_MESSAGE,
    render_service,
    unprotected_public_endpoint,
)
from kaito_operator.workspace.status import (
    Observation,
    compute_conditions,
    compute_phase,
    expected_ready_field,
    merge_conditions,
    status_changed,
    transitions,
)
from kaito_operator.workspace.validation import Limits, describe, validate_create
from kaito_operator.workspace.workload import RenderOptions, render_workload, rendered_hash

log = logging.getLogger(__name__)

CONTROLLER_NAME: Final = "workspace"
MACHINES_BY_WORKSPACE: Final = "workspace"
PODS_BY_WORKSPACE: Final = "workspace"
CHILD_SELECTOR: Final = c.LABEL_WORKSPACE  # "has the label": only the children we made
PHASE_CONDITIONS: Final = frozenset(
    {c.COND_RESOURCE_READY, c.COND_INFERENCE_READY, c.COND_WORKSPACE_READY, c.COND_WORKSPACE_DELETING}
)
"""Conditions whose change to True (Normal) or False (Warning) is announced as an Event."""
REFUSED_RETRY_SECONDS: Final = 300.0
"""How long a refused write (403, 422) waits before it is tried again, unless something changes."""
REASON_NO_LONGER_ADMISSIBLE: Final = "NoLongerAdmissible"
"""The Warning Event's reason when a Workspace already served breaks a creation rule changed since."""


def _machine_index(machine: dict[str, Any]) -> list[str]:
    labels = node_labels(machine)
    name, namespace = labels.get(c.LABEL_WORKSPACE), labels.get(c.LABEL_WORKSPACE_NAMESPACE)
    return [f"{namespace}/{name}"] if name and namespace else []


def _pod_index(pod: dict[str, Any]) -> list[str]:
    meta = pod.get("metadata") or {}
    name = (meta.get("labels") or {}).get(c.LABEL_WORKSPACE)
    return [f"{meta.get('namespace')}/{name}"] if name else []


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = obj.setdefault("metadata", {})
    return meta


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _meta(obj).get("ownerReferences") or [])


def _invalid(error: ApiError) -> bool:
    """The API server refused the object itself (a bad user template): retrying cannot help."""
    return error.status in (400, 422) and error.reason in ("Invalid", "BadRequest")


def _machine_workspace(machine: dict[str, Any]) -> ObjectKey | None:
    labels = node_labels(machine)
    name, namespace = labels.get(c.LABEL_WORKSPACE), labels.get(c.LABEL_WORKSPACE_NAMESPACE)
    return ObjectKey(namespace, name) if name and namespace else None


class WorkspaceReconciler:
    def __init__(
        self,
        client: KubeClient,
        *,
        workspaces: Informer,
        machines: Informer,
        nodes: Informer,
        deployments: Informer,
        services: Informer,
        pods: Informer,
        recorder: EventRecorder,
        clock: Clock,
        options: RenderOptions,
        limits: Limits | None = None,
        refused_retry: float = REFUSED_RETRY_SECONDS,
        estimator: ProvisioningEstimator | None = None,
    ) -> None:
        self._client = client
        self._limits = limits or Limits()
        self._workspaces = workspaces
        self._machines = machines
        self._nodes = nodes
        self._deployments = deployments
        self._services = services
        self._pods = pods
        self._estimator = estimator or ProvisioningEstimator()
        self._recorder = recorder
        self._clock = clock
        self._options = options
        self._refused_retry = refused_retry
        machines.add_indexer(MACHINES_BY_WORKSPACE, _machine_index)
        # Machines we are creating or created that the cache has not shown yet, so a reconcile
        # woken before their watch event neither recreates them nor forgets to delete them. Any
        # event about a name (added, changed, deleted) hands it over to the cache; so does a list
        # begun after the create returned (the Machine informer's list_mark then, None while in
        # flight): one made and deleted while the watch was down has no event at all.
        self._created: dict[ObjectKey, dict[str, int | None]] = {}
        self._rule_warnings: dict[ObjectKey, str] = {}  # the admission problem last warned about, per Workspace
        self._measured: set[str] = set()  # UIDs of the Machines whose provisioning time was recorded
        machines.add_handler(self._machine_seen)
        pods.add_indexer(PODS_BY_WORKSPACE, _pod_index)

    def _machine_seen(self, event: WatchEvent) -> None:
        key = _machine_workspace(event.obj)
        if key is not None and key in self._created:
            self._created[key].pop(_meta(event.obj).get("name") or "", None)
        if key is not None:
            self._measure(event)

    def _measure(self, event: WatchEvent) -> None:
        """Each Machine of ours counts once, when first seen Ready: creation → Ready's transition.

        Not only Ready transitions seen live: a writer sharing the informer (the provisioner)
        writes its update through to the cache, so the watch event's ``old`` may already be Ready.
        """
        uid = str(_meta(event.obj).get("uid") or "")
        if event.type == "DELETED":
            self._measured.discard(uid)
            return
        if not uid or uid in self._measured:
            return
        seconds = provisioning_seconds(event.obj)
        machine_type = instance_type(event.obj)
        if seconds is not None and machine_type:
            self._measured.add(uid)
            self._estimator.observe(machine_type, seconds)

    # --- entry point -------------------------------------------------------------------------------
    async def reconcile(self, key: ObjectKey) -> Result:
        obj = self._workspaces.store.get(key)
        if obj is None:
            self._created.pop(key, None)
            self._rule_warnings.pop(key, None)
            return Result()
        if _meta(obj).get("deletionTimestamp"):
            # Before reading the spec: a Workspace this version cannot read must still be deletable.
            return await self._finalize(key, obj)
        try:
            workspace = Workspace.model_validate(obj)
        except ValidationError as error:
            # Admitted while the webhook was down: say why on the object, as the webhook would have.
            problem = self._spec_problem(obj) or f"the workspace cannot be read: {error}"
            await self._write_status(
                obj, Observation(generation=self._generation(obj), count=0, spec_problem=problem), []
            )
            raise PermanentError(f"workspace {key} cannot be read: {error}") from error
        if c.WORKSPACE_FINALIZER not in (_meta(obj).get("finalizers") or []):
            obj = await self._add_finalizer(key, obj)
        return await self._sync(key, obj, workspace)

    # --- deletion ----------------------------------------------------------------------------------
    async def _finalize(self, key: ObjectKey, obj: dict[str, Any]) -> Result:
        if c.WORKSPACE_FINALIZER not in (_meta(obj).get("finalizers") or []):
            return Result()
        await self._write_status(obj, Observation(generation=self._generation(obj), count=0, deleting=True), None)
        cached = self._machines_of(key)
        remaining = {_meta(m)["name"] for m in cached}
        unseen = set(self._created.get(key, {})) - remaining
        to_delete = [_meta(m)["name"] for m in cached if not _meta(m).get("deletionTimestamp")] + sorted(unseen)
        if to_delete:
            results = await asyncio.gather(*(self._delete_machine(name) for name in to_delete), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise TransientError(f"deleting machines of {key}: {errors[0]}")
            self._created.pop(key, None)
        if remaining:
            log.info("workspace %s: waiting for %d machines to go", key, len(remaining))
            return Result()  # each Machine's delete event brings this key back
        await self._remove_finalizer(key, obj)
        self._created.pop(key, None)
        return Result()

    async def _delete_machine(self, name: str) -> None:
        try:
            await self._client.delete(MACHINE, name)
        except ApiError as error:
            if not error.not_found:
                raise

    # --- finalizer ---------------------------------------------------------------------------------
    async def _add_finalizer(self, key: ObjectKey, obj: dict[str, Any]) -> dict[str, Any]:
        meta = _meta(obj)
        finalizers = meta.get("finalizers") or []
        test = {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}
        add = (
            {"op": "add", "path": "/metadata/finalizers/-", "value": c.WORKSPACE_FINALIZER}
            if finalizers
            else {"op": "add", "path": "/metadata/finalizers", "value": [c.WORKSPACE_FINALIZER]}
        )
        updated = await self._patch_metadata(key, [test, add])
        return updated

    async def _remove_finalizer(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        finalizers = _meta(obj).get("finalizers") or []
        index = finalizers.index(c.WORKSPACE_FINALIZER)
        path = f"/metadata/finalizers/{index}"
        await self._patch_metadata(
            key, [{"op": "test", "path": path, "value": c.WORKSPACE_FINALIZER}, {"op": "remove", "path": path}]
        )

    async def _patch_metadata(self, key: ObjectKey, operations: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            updated = await self._client.patch(
                WORKSPACE, key.name, operations, namespace=key.namespace, patch_type="json"
            )
        except ApiError as error:
            if error.status in (409, 422):
                # Our cached copy is stale (a "test" failed); the watch will bring the current one.
                raise TransientError(f"workspace {key} changed meanwhile: {error.api_message}") from error
            raise
        self._workspaces.write_through(updated)
        return updated

    # --- the live path -----------------------------------------------------------------------------
    async def _sync(self, key: ObjectKey, obj: dict[str, Any], workspace: Workspace) -> Result:
        generation = self._generation(obj)
        count = workspace.resource.count
        problem = self._spec_problem(obj)
        machines = [machine_state(m) for m in self._machines_of(key)]
        if problem is not None and self._made_anything(key, machines):
            # The admission rules guard creation. One that changed since (a lower
            # KAITO_MAX_WORKSPACE_COUNT, an upgrade's stricter spelling) must not fail a Workspace
            # already served: its Machines stay billed, so replacement and drift repair go on.
            await self._warn_once(key, obj, problem)
            problem = None
        # The node of a Machine being deleted is about to go: replace it now, not once it is gone.
        leaving = {m.node_name for m in machines if m.deleting and m.node_name}
        selected = select_nodes((n for n in self._nodes.store.list() if node_name(n) not in leaving), workspace)
        retry_after: float | None = None
        if problem is None and len(selected) < count and not machines:
            try:
                problem = await self._template_problem(key, workspace)
            except ApiError as error:
                if not error.refused:
                    raise  # transient: retried with backoff
                # Refused for another reason than the template itself (403: a policy engine, an
                # exhausted ResourceQuota): no Machine until it would be accepted, looked at again later.
                problem = f"the Deployment made from this template is refused: {error.api_message or error}"
                retry_after = self._refused_retry
        if problem is not None:
            await self._write_status(obj, Observation(generation=generation, count=count, spec_problem=problem), [])
            raise PermanentError(problem, retry_after=retry_after)

        errors: list[ApiError] = []
        refusals: list[ApiError] = []  # retrying the same write cannot help: a slow look, no backoff
        resource_error: str | None = None
        if len(selected) < count:
            try:
                await self._ensure_machines(key, obj, workspace, selected, machines)
            except ApiError as error:
                (refusals if error.refused else errors).append(error)
                resource_error = f"creating machines: {error.api_message or error}"

        inference_error: str | None = None
        inference_failure: str | None = None
        try:
            applied_service = await self._ensure_child(SERVICE, self._services, render_service(workspace), workspace)
        except ApiError as error:
            applied_service = None
            (refusals if error.refused else errors).append(error)
            inference_error = f"applying service: {error.api_message or error}"
        if applied_service is not None and unprotected_public_endpoint(workspace):
            # Said when the public Service is written (created or changed), not on every reconcile:
            # each repeat of an Event is one more API write.
            await self._recorder.warning(obj, "PublicEndpointWithoutAPIKey", PUBLIC_WITHOUT_KEY_MESSAGE)

        desired: dict[str, Any] | None = None
        try:
            desired = render_workload(workspace, self._options)
        except ValueError as error:
            # The runtime the workspace asks for is not available, or refuses the preset's limits.
            inference_failure = f"cannot render the workload: {error}"
        current = self._deployments.store.get(ObjectKey(key.namespace, workload_name(key.name)))
        if desired is not None and (len(selected) >= count or current is not None):
            try:
                current = await self._ensure_child(DEPLOYMENT, self._deployments, desired, workspace) or current
            except ApiError as error:
                if _invalid(error):
                    refusals.append(error)
                    inference_failure = f"the workload was rejected: {error.api_message}"
                else:
                    (refusals if error.refused else errors).append(error)
                    inference_error = f"applying workload: {error.api_message or error}"

        observation = Observation(
            generation=generation,
            count=count,
            selected_nodes=tuple(selected),
            machines=tuple(machines),
            resource_error=resource_error,
            inference_error=inference_error,
            inference_failure=inference_failure,
            pods=tuple(pod_state(p) for p in self._pods_of(key) if not is_terminating(p)),
            nodes_expected_ready=self._nodes_expected_ready(workspace, machines, selected),
            **self._workload_view(current, rendered_hash(desired)),
        )
        await self._write_status(obj, observation, selected)
        if errors:
            first = errors[0]
            raise TransientError(str(first), retry_after=first.retry_after)
        if refusals:
            raise PermanentError(str(refusals[0]), reason=refusals[0].reason, retry_after=self._refused_retry)
        if inference_failure is not None:
            raise PermanentError(inference_failure)
        return Result()

    def forget_listed(self, listed: int) -> list[ObjectKey]:
        """The Machine informer applied its list number ``listed``: names created before that list
        began are in the cache now or gone for good (made and deleted while the watch was down,
        with no event). Forget them; the Workspaces to reconcile again, as one may be short now."""
        keys: list[ObjectKey] = []
        for key, names in self._created.items():
            seen = [name for name, mark in names.items() if mark is not None and mark < listed]
            for name in seen:
                del names[name]
            if seen:
                keys.append(key)
        return keys

    def _nodes_expected_ready(
        self, workspace: Workspace, machines: list[MachineState], selected: list[str]
    ) -> datetime | None:
        """When the last Machine still on its way should be Ready; None when any is unknown."""
        pending = [m for m in machines if not m.deleting and not m.ready and m.node_name not in selected]
        estimates = [
            self._estimator.expected_ready(m.instance_type or workspace.resource.instance_type, m.created)
            for m in pending
            if m.created is not None
        ]
        if not pending or len(estimates) < len(pending) or any(e is None for e in estimates):
            return None
        return max(e for e in estimates if e is not None)

    def _made_anything(self, key: ObjectKey, machines: list[MachineState]) -> bool:
        """Machines (seen or being created) or a Deployment exist for this Workspace."""
        return (
            bool(machines)
            or bool(self._created.get(key))
            or self._deployments.store.get(ObjectKey(key.namespace, workload_name(key.name))) is not None
        )

    async def _warn_once(self, key: ObjectKey, obj: dict[str, Any], problem: str) -> None:
        """One Warning Event per problem and Workspace (each repeat would be one more API write)."""
        if self._rule_warnings.get(key) == problem:
            return
        await self._recorder.warning(
            obj, REASON_NO_LONGER_ADMISSIBLE, f"kept running, but it would not be admitted now: {problem}"
        )
        self._rule_warnings[key] = problem

    def _spec_problem(self, obj: dict[str, Any]) -> str | None:
        """The admission rules (validation.py), so what slipped past the webhook fails the same way."""
        return describe(validate_create(obj, self._limits)) or None

    async def _template_problem(self, key: ObjectKey, workspace: Workspace) -> str | None:
        """Before the first Machine of a custom template: would its Deployment be accepted at all?"""
        if workspace.inference.template is None:
            return None
        if self._deployments.store.get(ObjectKey(key.namespace, workload_name(key.name))) is not None:
            return None
        try:
            problem = await dry_run_workload(self._client, workspace, self._options)
        except ValueError as error:
            return f"cannot render the workload: {error}"
        return str(problem) if problem is not None else None

    async def _ensure_machines(
        self,
        key: ObjectKey,
        obj: dict[str, Any],
        workspace: Workspace,
        selected: list[str],
        machines: list[MachineState],
    ) -> None:
        cached_names = {m.name for m in machines}
        created = self._created.setdefault(key, {})
        for name in cached_names & set(created):
            del created[name]  # seen now: the cache speaks for them
        in_flight = [m for m in machines if not m.deleting and m.node_name not in selected]
        shortfall = workspace.resource.count - len(selected) - len(in_flight) - len(created)
        if shortfall <= 0:
            return
        # Names of Machines still terminating stay taken: a new Machine never shares a name (and an
        # agent pool) with one whose deletion is still running.
        names = machine_names(_meta(obj)["uid"], shortfall, taken=cached_names | set(created))
        created.update(dict.fromkeys(names))  # before the create: its watch event may arrive before the answer
        results = await asyncio.gather(
            *(self._create_machine(workspace, name) for name in names), return_exceptions=True
        )
        made = [name for name, result in zip(names, results, strict=True) if not isinstance(result, BaseException)]
        mark = self._machines.list_mark
        for name in names:
            if name not in created:
                continue  # its watch event came first: the cache speaks for it
            if name in made:
                created[name] = mark
            else:
                del created[name]
        if made:
            await self._recorder.normal(obj, "CreateMachine", f"creating {len(made)} machines: {', '.join(made)}")
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _create_machine(self, workspace: Workspace, name: str) -> None:
        try:
            await self._client.create(MACHINE, render_machine(workspace, name))
        except ApiError as error:
            if not error.already_exists:  # made by an earlier reconcile: that is the point of the name
                raise

    async def _ensure_child(
        self, kind: ResourceKind, informer: Informer, desired: dict[str, Any], workspace: Workspace
    ) -> dict[str, Any] | None:
        """Make the live child hold ``desired``; returns what was written, None when nothing was.

        A new intent (no object, another rendered hash, another owner) is server-side applied. The
        same intent is compared with the live object: fields someone changed (``kubectl scale``,
        an edited port) are patched back, fields we do not write (a user's annotation) are left
        alone, and an object that holds our intent costs no request at all.
        """
        meta = desired["metadata"]
        current = informer.store.get(ObjectKey(meta["namespace"], meta["name"]))
        if (
            current is None
            or rendered_hash(current) != rendered_hash(desired)
            or not _owned_by(current, workspace.metadata["uid"])
        ):
            applied = await self._client.apply(kind, desired, field_manager=FIELD_MANAGER)
            informer.write_through(applied)
            return applied
        differences = find_drift(desired, current)
        if not differences:
            return None
        log.info(
            "%s %s/%s drifted at %s; restoring",
            kind.kind,
            meta["namespace"],
            meta["name"],
            ", ".join(d.pointer for d in differences),
        )
        patch = restore_patch(differences, _meta(current).get("resourceVersion") or "")
        restored = await self._client.patch(
            kind, meta["name"], patch, namespace=meta["namespace"], patch_type="json", field_manager=FIELD_MANAGER
        )
        informer.write_through(restored)
        return restored

    @staticmethod
    def _workload_view(deployment: dict[str, Any] | None, desired_hash: str | None) -> dict[str, Any]:
        if deployment is None:
            return {}
        status = deployment.get("status") or {}
        observed = int(status.get("observedGeneration") or 0) >= int(_meta(deployment).get("generation") or 0)
        return {
            "workload_exists": True,
            "ready_replicas": int(status.get("readyReplicas") or 0),
            "updated_replicas": int(status.get("updatedReplicas") or 0),
            "total_replicas": int(status.get("replicas") or 0),
            "workload_observed": observed and rendered_hash(deployment) == desired_hash,
        }

    # --- status ------------------------------------------------------------------------------------
    @staticmethod
    def _generation(obj: dict[str, Any]) -> int:
        return int(_meta(obj).get("generation") or 0)

    def _machines_of(self, key: ObjectKey) -> list[dict[str, Any]]:
        return self._machines.store.by_index(MACHINES_BY_WORKSPACE, f"{key.namespace}/{key.name}")

    def _pods_of(self, key: ObjectKey) -> list[dict[str, Any]]:
        return self._pods.store.by_index(PODS_BY_WORKSPACE, f"{key.namespace}/{key.name}")

    async def _write_status(
        self, obj: dict[str, Any], observation: Observation, worker_nodes: list[str] | None
    ) -> None:
        current = obj.get("status") or {}
        computed = compute_conditions(observation)
        conditions = merge_conditions(
            current.get("conditions") or [],
            computed,
            generation=observation.generation,
            now=self._clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        phase = compute_phase(observation, computed)
        desired: dict[str, Any] = {
            "conditions": conditions,
            "phase": phase,
            # None removes the field (merge patch): no estimate once the nodes are there.
            "nodesExpectedReadyTime": expected_ready_field(
                current.get("nodesExpectedReadyTime"), observation.nodes_expected_ready, phase
            ),
        }
        desired["workerNodes"] = sorted(worker_nodes) if worker_nodes is not None else current.get("workerNodes")
        if not status_changed(current, desired):
            return
        meta = _meta(obj)
        updated = await self._client.patch(
            WORKSPACE,
            meta["name"],
            {"status": desired},
            namespace=meta["namespace"],
            patch_type="merge",
            subresource="status",
        )
        self._workspaces.write_through(updated)
        for condition in transitions(current.get("conditions") or [], conditions):
            if condition["type"] not in PHASE_CONDITIONS or condition["status"] == "Unknown":
                continue  # MachineReady moves with ResourceReady; "still working" is not a phase
            message = f"{condition['type']} is {condition['status']}: {condition['message']}"
            if condition["status"] == "False":
                await self._recorder.warning(updated, condition["reason"], message)
            else:
                await self._recorder.normal(updated, condition["reason"], message)


# --- wiring --------------------------------------------------------------------------------------
def _pod_stage_changed(event: WatchEvent) -> bool:
    """Pods change status often (kubelet heartbeats, restarts counted); only their step matters."""
    if event.type == "SYNC":
        return False
    if event.type != "MODIFIED" or event.old is None:
        return True
    return pod_state(event.obj).stage != pod_state(event.old).stage or is_terminating(event.obj) != is_terminating(
        event.old
    )


def _node_changed(event: WatchEvent) -> bool:
    """Node heartbeats change nothing we look at; readiness, labels and schedulability do."""
    if event.type == "SYNC":
        return False
    if event.type != "MODIFIED" or event.old is None:
        return True
    new, old = event.obj, event.old
    return (
        node_is_ready(new) != node_is_ready(old)
        or node_labels(new) != node_labels(old)
        or (new.get("spec") or {}).get("unschedulable") != (old.get("spec") or {}).get("unschedulable")
        or bool(_meta(new).get("deletionTimestamp")) != bool(_meta(old).get("deletionTimestamp"))
    )


def _workspaces_for_node(workspaces: Informer) -> Mapper:
    # Every node event is matched against every Workspace: parse each Workspace once per version
    # (validating them all per event was the operator's top CPU cost with hundreds of each).
    parsed: dict[ObjectKey, tuple[str, Workspace | None]] = {}

    def workspace_of(obj: dict[str, Any]) -> Workspace | None:
        key, version = key_of(obj), str(_meta(obj).get("resourceVersion") or "")
        cached = parsed.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            workspace: Workspace | None = Workspace.model_validate(obj)
        except ValidationError:
            workspace = None
        parsed[key] = (version, workspace)
        return workspace

    def mapper(event: WatchEvent) -> list[ObjectKey]:
        name = node_name(event.obj)
        keys = []
        objects = workspaces.store.list()
        if len(parsed) > 2 * len(objects) + 16:  # forget deleted Workspaces now and then
            live = {key_of(obj) for obj in objects}
            for gone in [key for key in parsed if key not in live]:
                del parsed[gone]
        for obj in objects:
            status = obj.get("status") or {}
            if name in (status.get("workerNodes") or []):
                keys.append(key_of(obj))
                continue
            workspace = workspace_of(obj)
            if workspace is None:
                continue
            candidate_then = event.old is not None and is_candidate(event.old, workspace)
            if candidate_then or is_candidate(event.obj, workspace):
                keys.append(key_of(obj))
        return keys

    return mapper


def workspace_controller(
    manager: Manager,
    *,
    recorder: EventRecorder,
    options: RenderOptions,
    limits: Limits | None = None,
    concurrency: int | None = None,
    reconcile_timeout: float = 120.0,
    refused_retry: float = REFUSED_RETRY_SECONDS,
    estimator: ProvisioningEstimator | None = None,
) -> Controller:
    """Build the workspace controller on the manager's shared informers and register it."""
    workspaces = manager.informer(WORKSPACE)
    machines = manager.informer(MACHINE)
    nodes = manager.informer(NODE)
    deployments = manager.informer(DEPLOYMENT, label_selector=CHILD_SELECTOR)
    services = manager.informer(SERVICE, label_selector=CHILD_SELECTOR)
    pods = manager.informer(POD, label_selector=CHILD_SELECTOR)
    reconciler = WorkspaceReconciler(
        manager.client,
        workspaces=workspaces,
        machines=machines,
        nodes=nodes,
        deployments=deployments,
        services=services,
        pods=pods,
        recorder=recorder,
        clock=manager.clock,
        options=options,
        limits=limits,
        refused_retry=refused_retry,
        estimator=estimator,
    )
    controller = manager.controller(
        CONTROLLER_NAME, reconciler, concurrency=concurrency, reconcile_timeout=reconcile_timeout
    )
    controller.watch(workspaces)
    controller.watch(machines, map_by_labels(c.LABEL_WORKSPACE, c.LABEL_WORKSPACE_NAMESPACE))
    controller.watch(deployments, map_to_owner(WORKSPACE))
    controller.watch(services, map_to_owner(WORKSPACE))
    controller.watch(pods, map_by_labels(c.LABEL_WORKSPACE), predicate=_pod_stage_changed)
    controller.watch(nodes, _workspaces_for_node(workspaces), predicate=_node_changed)

    def machines_listed(listed: int) -> None:
        for key in reconciler.forget_listed(listed):
            controller.queue.add(key)

    machines.add_relist_handler(machines_listed)
    return controller
