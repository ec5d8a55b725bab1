"""Termination: a deleted Machine gives back what it made, and only that. Its pool is ours only when
the pool's tags say "this cluster, this Machine"; then its nodes are cordoned and drained (the
Eviction API, PodDisruptionBudgets respected, up to ``drain_timeout_s``), deleted, and the pool's
DELETE is started and followed until a GET of the pool answers NotFound (a finished or unknown
delete operation alone releases nothing). A pool that is not ours (the user's pool of that name) and
its nodes are never deleted: only our finalizer and our owner reference come off such a node. A 404
that may mean a wrong resource group, cluster or subscription is a configuration error: the
finalizer stays until Azure can answer."""

from __future__ import annotations

import logging
from typing import Any

from gpu_provisioner import agentpool
from gpu_provisioner import conditions as cond
from gpu_provisioner.cloudprovider import CloudProvider, OperationProgress
from gpu_provisioner.errors import (
    CloudError,
    ConfigurationError,
    NotFound,
    OperationFailed,
    OperationInProgress,
    Transient,
    UnreadableOperation,
    without_volatile_parts,
)
from gpu_provisioner.machine.draft import Draft, meta
from gpu_provisioner.machine.launch import ANNOTATION_FAILED_REQUEST
from gpu_provisioner.machine.nodes import delete_node, disown_node, drain_and_delete
from gpu_provisioner.machine.operations import OperationLedger
from gpu_provisioner.machine.registration import Registration
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c
from kaito_operator.runtime import Clock, KubeClient, TransientError

log = logging.getLogger(__name__)

Finished = bool


class Termination:
    def __init__(
        self,
        *,
        client: KubeClient,
        registration: Registration,
        cloud: CloudProvider,
        operations: OperationLedger,
        clock: Clock,
        settings: ProvisionerSettings,
        cluster_name: str,
    ) -> None:
        self._client = client
        self._registration = registration
        self._cloud = cloud
        self._operations = operations
        self._clock = clock
        self._settings = settings
        self._cluster_name = cluster_name

    async def reconcile(self, draft: Draft) -> Finished | float | None:
        """True once nothing of ours is left (the finalizer may go); else when to look again."""
        if agentpool.pool_name_problem(draft.name) is not None:
            return True  # no pool can have this name, so none was ever made
        try:
            delete = self._operations.find(draft, "delete")
            progress = await self._look(draft, delete)
            if progress is not None:
                if not progress.done:
                    return self._poll_delay(progress.retry_after)
                # Done, or Azure no longer knows the operation (an expired id reads as done): only
                # the pool's own NotFound proves it gone, so look at it before letting go.
                self._operations.clear(draft)
            pool = await self._cloud.get(draft.name)
            if not agentpool.belongs_to(pool.tags, cluster_name=self._cluster_name, machine_name=draft.name):
                log.warning(
                    "machine %s: agent pool %s was not created by kaito; leaving it and its nodes alone",
                    draft.name,
                    draft.name,
                    extra={"key": draft.name},
                )
                draft.events.append(
                    ("Normal", "AgentPoolLeftAlone", f"agent pool {draft.name} was not created by kaito; not deleted")
                )
                await self._disown_nodes(draft)
                return True
            if pool.deleting:
                return self._settings.poll_interval_s
            draining = await drain_and_delete(
                self._client,
                self._registration.nodes_of(draft.name),
                clock=self._clock,
                timeout_s=self._settings.drain_timeout_s,
            )
            if draining:
                blocked = [pod for drained in draining for pod in drained.blocked]
                if blocked:
                    draft.events.append(
                        (
                            "Normal",
                            "DrainBlocked",
                            f"PodDisruptionBudgets keep {', '.join(blocked[:5])} on the node of agent pool "
                            f"{draft.name} for now; retrying until the drain timeout",
                        )
                    )
                return self._settings.poll_interval_s
            operation = await self._cloud.delete(draft.name)
            self._operations.save(draft, operation)
            draft.events.append(("Normal", "DeletingAgentPool", f"Deleting AKS agent pool {draft.name}"))
            return self._settings.poll_interval_s
        except NotFound:
            return await self._release_own_nodes(draft)
        except CloudError as error:
            return self._failed(draft, error)

    async def _look(self, draft: Draft, delete: Any) -> OperationProgress | None:
        if delete is None:
            return None
        try:
            return await self._cloud.poll(delete)
        except UnreadableOperation as error:
            log.warning("machine %s: clearing the delete operation: %s", draft.name, error)
            self._operations.clear(draft)
            return None

    async def _release_own_nodes(self, draft: Draft) -> Finished:
        """The pool is gone: delete the nodes this Machine registered, if any are left."""
        for node in self._registration.nodes_of(draft.name):
            owners = meta(node).get("ownerReferences") or []
            if any(ref.get("uid") == draft.uid for ref in owners):
                await delete_node(self._client, node)
        return True

    async def _disown_nodes(self, draft: Draft) -> None:
        """The pool is not ours: its nodes are never deleted, but one an older version claimed for
        this Machine loses our finalizer and owner reference (else Kubernetes' garbage collector
        would delete it once the Machine is gone)."""
        for node in self._registration.nodes_of(draft.name):
            node_meta = meta(node)
            owners = node_meta.get("ownerReferences") or []
            if c.MACHINE_FINALIZER in (node_meta.get("finalizers") or []) or any(
                ref.get("uid") == draft.uid for ref in owners
            ):
                await disown_node(self._client, node, draft.uid)

    def _failed(self, draft: Draft, error: CloudError) -> Finished | float | None:
        if isinstance(error, OperationFailed):
            self._operations.clear(draft)  # send the DELETE again
        if isinstance(error, (Transient, OperationFailed)):
            draft.retry = TransientError(str(error), reason=error.reason, retry_after=error.retry_after)
            return None
        if isinstance(error, OperationInProgress):
            return self._poll_delay(error.retry_after)
        if isinstance(error, ConfigurationError) and not self._may_have_created(draft):
            # Azure never accepted a create for this Machine, so there is no pool to wait for; should
            # that be wrong (a write lost before a restart), the garbage collector removes the pool.
            log.warning(
                "machine %s: released without deleting an agent pool: none was ever created (%s)",
                draft.name,
                error,
                extra={"key": draft.name},
            )
            return True
        message = cond.trim(
            without_volatile_parts(
                f"deleting agent pool {draft.name} failed: {error}; the finalizer stays until it is gone"
            )
        )
        draft.events.append(("Warning", error.reason, message))
        log.warning("machine %s: %s", draft.name, message, extra={"key": draft.name})
        return self._settings.auth_retry_interval_s

    def _may_have_created(self, draft: Draft) -> bool:
        """Azure may hold a pool of ours for this Machine: it launched, or a create was accepted (even
        one whose operation failed later: a Failed pool with our tags may stand). A Machine of an
        older version, which wrote no create-accepted marker, counts when it has a failed-request
        annotation (written after every accepted PUT, and after permanent refusals)."""
        if draft.status_of(c.COND_MACHINE_LAUNCHED) == "True" or OperationLedger.create_accepted(draft):
            return True
        if draft.annotation(ANNOTATION_FAILED_REQUEST) is not None:
            return True
        return self._operations.find(draft, "create") is not None

    def _poll_delay(self, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self._settings.max_transient_retry_s)
        return self._settings.poll_interval_s
