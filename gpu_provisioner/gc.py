"""The garbage collector: a singleton sweep, every two minutes by default, for what the Machine
controller cannot see any more.

Leaks it closes (gpu-provisioner #178/#181): a Machine deleted while the operator was down, or
whose finalizer someone removed by hand, leaves its agent pool (and node) behind, costing GPU
money for ever. Each sweep lists the cluster's agent pools, keeps those tagged as made by this
operator for this cluster, subtracts the Machines that exist, spares pools younger than the grace
period (a create whose Machine the cache has not shown yet), and deletes the rest with their nodes,
in parallel. It also wakes the Machine controller for Machines whose node vanished, so they go
Ready=False/NodeNotFound without waiting for a resync.

It runs as a controller with one fixed key, so the runtime's per-key serialisation makes it a
singleton and its requeue makes it periodic.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Final

from gpu_provisioner import agentpool
from gpu_provisioner.cloudprovider import CloudProvider, Instance
from gpu_provisioner.errors import CloudError, NotFound, OperationInProgress
from gpu_provisioner.machine import NODE_INDEX, agentpool_of, machine_filter
from gpu_provisioner.machine.nodes import drain_and_delete
from gpu_provisioner.settings import ProvisionerSettings, parse_selector, selector_matches
from kaito_operator.runtime import (
    Clock,
    Controller,
    Informer,
    KubeClient,
    ObjectKey,
    Result,
)

log = logging.getLogger(__name__)
GC_KEY: Final = ObjectKey("", "agent-pool-garbage-collection")


class GarbageCollector:
    def __init__(
        self,
        *,
        client: KubeClient,
        machines: Informer,
        nodes: Informer,
        cloud: CloudProvider,
        clock: Clock,
        settings: ProvisionerSettings,
        cluster_name: str,
        machine_controller: Controller | None = None,
    ) -> None:
        self._client = client
        self._machines = machines
        self._nodes = nodes
        self._cloud = cloud
        self._clock = clock
        self._settings = settings
        self._cluster_name = cluster_name
        self._machine_controller = machine_controller
        self._selector = parse_selector(settings.machine_selector)
        self._handled = machine_filter(self._selector)
        nodes.add_indexer(NODE_INDEX, agentpool_of)
        # When a pool without a creation tag was first seen, so it still gets a grace period.
        self._first_seen: dict[str, datetime] = {}
        self.collected: list[str] = []
        """Names of the pools this collector deleted (for logs and tests)."""

    async def reconcile(self, key: ObjectKey) -> Result:
        try:
            pools = await self._cloud.list()
        except CloudError as error:
            log.warning("garbage collection: listing agent pools failed: %s", error)
            return Result(self._settings.gc_interval_s)
        orphans = self.orphans(pools)
        if len(orphans) > self._settings.gc_max_deletions_per_sweep:
            log.warning(
                "garbage collection: %d orphan agent pools; deleting %d this sweep (gc_max_deletions_per_sweep)",
                len(orphans),
                self._settings.gc_max_deletions_per_sweep,
            )
            orphans = orphans[: self._settings.gc_max_deletions_per_sweep]
        if orphans:
            # Every deletion runs to its end: one that fails must not leave the others unattended.
            outcomes = await asyncio.gather(*(self._collect(pool) for pool in orphans), return_exceptions=True)
            for pool, outcome in zip(orphans, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    log.warning("garbage collection: collecting agent pool %s failed: %s", pool.name, outcome)
        self._wake_machines_without_nodes()
        return Result(self._settings.gc_interval_s)

    def orphans(self, pools: list[Instance]) -> list[Instance]:
        """Our pools with no Machine of the same name, older than the grace period, not already going."""
        now = self._clock.utcnow()
        machine_names = {key.name for key in self._machines.store.keys()}  # noqa: SIM118 (a Store, not a dict)
        ours = [
            p
            for p in pools
            if agentpool.is_ours(p.tags, self._cluster_name) and selector_matches(self._selector, p.labels)
        ]
        for name in set(self._first_seen) - {p.name for p in ours}:
            del self._first_seen[name]
        orphans = []
        for pool in ours:
            if pool.name in machine_names or pool.deleting:
                continue
            born = agentpool.created_at(pool.tags) or self._first_seen.setdefault(pool.name, now)
            if (now - born).total_seconds() < self._settings.gc_grace_period_s:
                continue
            orphans.append(pool)
        return orphans

    async def _collect(self, pool: Instance) -> None:
        nodes = self._nodes.store.by_index(NODE_INDEX, pool.name)
        try:
            draining = await drain_and_delete(
                self._client, nodes, clock=self._clock, timeout_s=self._settings.drain_timeout_s
            )
            if draining:
                log.info("garbage collection: draining the nodes of agent pool %s; next sweep", pool.name)
                return
            await self._cloud.delete(pool.name)
        except NotFound:
            pass
        except OperationInProgress as error:
            log.info("garbage collection: agent pool %s is busy (%s); next sweep", pool.name, error)
            return
        except CloudError as error:
            log.warning("garbage collection: deleting agent pool %s failed: %s", pool.name, error)
            return
        self.collected.append(pool.name)
        log.info(
            "garbage collection: deleting agent pool %s (nodes %s): no Machine %s exists",
            pool.name,
            [_name(node) for node in nodes] or "none",
            pool.name,
        )

    def _wake_machines_without_nodes(self) -> None:
        if self._machine_controller is None:
            return
        for machine in self._machines.store.list():
            if not self._handled(machine):
                continue
            node_name = (machine.get("status") or {}).get("nodeName")
            if node_name and not self._nodes.store.by_index(NODE_INDEX, _name(machine)):
                self._machine_controller.queue.add(ObjectKey("", _name(machine)))


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name"))
