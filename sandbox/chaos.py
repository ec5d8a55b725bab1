"""The chaos drill: Workspaces that need new nodes, through the AKS simulator with random injected
faults, while ``kaito run`` is SIGKILLed at random moments and restarted and the API server is
restarted; then every Workspace must be Ready, and after deleting them nothing may be left.

``run_drill(plane, simulator, state_dir, plan)`` returns a ``ChaosReport``: whether every Workspace
became Ready, pools per Workspace (duplicates), pools, nodes and Machines left after the deletion
(leaks, orphans), PUTs sent while a create of the same pool ran (double actions), and the Azure PUTs
per Machine from the simulator's request record. ``benchmarks/chaos.py`` runs the full drill
(20 Workspaces, 100 kills, 2 API-server restarts); the e2e suite runs a small seeded one.

Everything random comes from one ``random.Random(plan.seed)``: the Workspaces, the faults and the
kill moments are the same on every run of a seed (the interleaving with the processes is not).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NAMESPACE, NODE, ApiError, KubeClient, RealClock, RuntimeMetrics
from sandbox.aks_simulator import AksSimulator, Fault
from sandbox.aks_simulator.server import RecordedRequest
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig
from sandbox.operator_process import OperatorProcess

log = logging.getLogger(__name__)
T = TypeVar("T")

FAULT_KINDS = ("throttle", "server_error", "allocation_failed", "token_down")


@dataclass(frozen=True)
class ChaosPlan:
    workspaces: int = 20
    kills: int = 100
    apiserver_restarts: int = 2
    seed: int = 1
    namespace: str = "chaos"
    provisioning_delay_s: float = 3.0
    deletion_delay_s: float = 0.5
    lifetime_s: tuple[float, float] = (1.0, 8.0)
    """How long the operator runs between a (re)start and its next SIGKILL (uniform)."""
    fault_interval_s: tuple[float, float] = (0.5, 3.0)
    """Pause between two injected faults (uniform), while the kills go on."""
    churn: float = 0.25
    """Share of the Workspaces deleted during the chaos and created again later (deletion under fire)."""
    ready_timeout_s: float = 600.0
    cleanup_timeout_s: float = 300.0


@dataclass
class ChaosReport:
    plan: ChaosPlan
    kills: int = 0
    apiserver_restarts: int = 0
    faults: collections.Counter[str] = field(default_factory=collections.Counter)
    azure_answers: collections.Counter[str] = field(default_factory=collections.Counter)
    """Azure requests by target and status (faults that fired show here)."""
    churned: int = 0
    chaos_s: float = 0.0
    ready_after_chaos_s: float | None = None
    """None: not every Workspace became Ready within the plan's timeout."""
    not_ready: list[str] = field(default_factory=list)
    duplicate_pools: dict[str, list[str]] = field(default_factory=dict)
    """Workspace → its pools, for every Workspace with more pools than it asked nodes for."""
    leaked_pools: list[str] = field(default_factory=list)
    orphan_nodes: list[str] = field(default_factory=list)
    leftover_machines: list[str] = field(default_factory=list)
    double_puts: list[RecordedRequest] = field(default_factory=list)
    puts_per_machine: dict[str, collections.Counter[int]] = field(default_factory=dict)
    """Machine (= pool) name → PUT answers by HTTP status."""
    operator_log: Path | None = None

    @property
    def clean(self) -> bool:
        return (
            self.ready_after_chaos_s is not None
            and not self.duplicate_pools
            and not self.leaked_pools
            and not self.orphan_nodes
            and not self.leftover_machines
            and not self.double_puts
        )

    def lines(self) -> list[str]:
        puts = [sum(statuses.values()) for statuses in self.puts_per_machine.values()]
        statuses: collections.Counter[int] = collections.Counter()
        for counter in self.puts_per_machine.values():
            statuses.update(counter)
        ready = f"{self.ready_after_chaos_s:.1f} s" if self.ready_after_chaos_s is not None else "NO"
        return [
            f"workspaces {self.plan.workspaces}, seed {self.plan.seed}, provisioning delay "
            f"{self.plan.provisioning_delay_s:g} s",
            f"operator SIGKILLs {self.kills}, API-server restarts {self.apiserver_restarts}, chaos phase "
            f"{self.chaos_s:.0f} s",
            "faults injected: " + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())),
            "Azure answers: " + ", ".join(f"{k}={v}" for k, v in sorted(self.azure_answers.items())),
            f"Workspaces deleted and created again during the chaos: {self.churned}",
            f"every Workspace Ready after the chaos: {ready}" + (f" (not: {self.not_ready})" if self.not_ready else ""),
            f"duplicate pools: {len(self.duplicate_pools)} {self.duplicate_pools or ''}".rstrip(),
            f"leaked pools: {len(self.leaked_pools)} {self.leaked_pools or ''}".rstrip(),
            f"orphan nodes: {len(self.orphan_nodes)} {self.orphan_nodes or ''}".rstrip(),
            f"Machines left: {len(self.leftover_machines)} {self.leftover_machines or ''}".rstrip(),
            f"PUTs while a create of the pool ran (double actions): {len(self.double_puts)}",
            f"Azure PUTs per Machine: {len(puts)} Machines, min {min(puts, default=0)}, "
            f"mean {sum(puts) / max(1, len(puts)):.2f}, max {max(puts, default=0)}; by answer: "
            + ", ".join(f"{status}={count}" for status, count in sorted(statuses.items())),
        ]


def workspace(namespace: str, index: int) -> dict[str, Any]:
    """falcon-7b in a label space of its own: no existing node fits, so each needs a new one."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"chaos-{index:03d}", "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC12s_v3",
            "labelSelector": {"matchLabels": {"apps": f"{namespace}-{index}"}},
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def random_fault(rng: random.Random) -> tuple[str, Fault]:
    kind = rng.choice(FAULT_KINDS)
    times = rng.randint(1, 3)
    if kind == "throttle":
        return kind, Fault.throttle(rng.choice(["PUT", "GET", "OPERATION", "DELETE"]), retry_after=1, times=times)
    if kind == "server_error":
        return kind, Fault.server_error(rng.choice(["PUT", "GET", "OPERATION", "DELETE", "LIST"]), times=times)
    if kind == "allocation_failed":
        return kind, Fault.allocation_failed(times=1)
    return kind, Fault(
        target="TOKEN",
        status=503,
        code="temporarily_unavailable",
        message="AADSTS90033: A transient error has occurred. Please try again (injected fault).",
        times=rng.randint(1, 5),
    )


def operator_environment(simulator: AksSimulator, plane: ControlPlane, token_file: Path) -> dict[str, str]:
    """The operator's settings for the drill: the simulator, and short provisioner intervals so a
    run of minutes exercises many retries, re-checks and garbage-collection sweeps."""
    return {
        **simulator.operator_environment(simulator.write_federated_token(token_file)),
        "KUBECONFIG": str(plane.kubeconfig),
        "KAITO_LOG_LEVEL": "INFO",
        "PROVISIONER_POLL_INTERVAL_S": "1",
        "PROVISIONER_ARM_POLLING_INTERVAL_S": "0.2",
        "PROVISIONER_TRANSIENT_RETRY_S": "0.5",
        "PROVISIONER_MAX_TRANSIENT_RETRY_S": "5",
        "PROVISIONER_AUTH_RETRY_INTERVAL_S": "2",
        "PROVISIONER_CONFIGURATION_RECHECK_INTERVAL_S": "2",
        "PROVISIONER_LAUNCH_RECHECK_INTERVAL_S": "3",
        "PROVISIONER_GC_INTERVAL_S": "3",
        "PROVISIONER_GC_GRACE_PERIOD_S": "5",
    }


async def retrying(call: Callable[[], Awaitable[T]], *, timeout: float = 90.0) -> T:
    """The drill's own API calls ride out an API-server restart."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
            if isinstance(error, ApiError) and not error.transient:
                raise
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)  # the API server is restarting; try again


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout: float) -> bool:
    """Poll ``check`` (riding out API errors) until True; False when the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await retrying(check):
            return True
        await asyncio.sleep(0.5)  # a condition poll with a deadline
    return False


class Drill:
    def __init__(self, plane: ControlPlane, simulator: AksSimulator, state_dir: Path, plan: ChaosPlan) -> None:
        self.plane = plane
        self.simulator = simulator
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.report = ChaosReport(plan=plan, operator_log=state_dir / "operator.log")
        self.operator = OperatorProcess(
            operator_environment(simulator, plane, state_dir / "federated-token"), state_dir / "operator.log"
        )
        self.kube: KubeClient | None = None

    @property
    def client(self) -> KubeClient:
        if self.kube is None:
            raise RuntimeError("the drill is not running")
        return self.kube

    async def run(self) -> ChaosReport:
        plan = self.plan
        self.simulator.config.provisioning_delay_s = plan.provisioning_delay_s
        self.simulator.config.deletion_delay_s = plan.deletion_delay_s
        async with await api_client_from_kubeconfig(self.plane.kubeconfig) as api:
            self.kube = KubeClient(api, clock=RealClock(), metrics=RuntimeMetrics(), qps=0, burst=1)
            try:
                await self._create_namespace()
                self.operator.start()
                started = time.monotonic()
                chaos_done = asyncio.Event()
                faults = asyncio.create_task(self._inject_faults(chaos_done))
                try:
                    await self._kill_and_restart()
                finally:
                    chaos_done.set()
                    await faults
                self.simulator.clear_faults()
                if not self.operator.alive:
                    self.operator.start()
                self.report.chaos_s = time.monotonic() - started
                settled = time.monotonic()
                if await wait_until(self._all_ready, timeout=plan.ready_timeout_s):
                    self.report.ready_after_chaos_s = time.monotonic() - settled
                await self._count_pools_per_workspace()
                await self._delete_and_look_for_leftovers()
            finally:
                await self.operator.stop()
                self.kube = None
        self.report.double_puts = self.simulator.puts_while_in_flight()
        self.report.azure_answers.update(
            f"{r.target} {r.status}" for r in self.simulator.requests if r.target not in (None, "ADMIN")
        )
        for request in self.simulator.requests_for("PUT"):
            self.report.puts_per_machine.setdefault((request.pool or "").lower(), collections.Counter())[
                request.status
            ] += 1
        return self.report

    async def _create_namespace(self) -> None:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.plan.namespace}}
        with contextlib.suppress(ApiError):
            await self.client.create(NAMESPACE, namespace)

    def _schedule(self) -> list[tuple[int, str, int]]:
        """(kill index, "create" | "delete", workspace index): the Workspaces arrive over the first
        60 % of the kills, and a share of them is deleted later and created again after that."""
        plan = self.plan
        spread = max(1, int(plan.kills * 0.6))
        events = [(self.rng.randrange(spread), "create", index) for index in range(plan.workspaces)]
        for index in self.rng.sample(range(plan.workspaces), int(plan.workspaces * plan.churn)):
            created = next(k for k, action, i in events if i == index and action == "create")
            deleted = self.rng.randint(created + 1, max(created + 1, plan.kills - 2))
            events += [
                (deleted, "delete", index),
                (self.rng.randint(deleted, max(deleted, plan.kills - 1)), "create", index),
            ]
        return sorted(events, key=lambda event: (event[0], event[1] == "create"))

    async def _apply(self, action: str, index: int) -> bool:
        """Create or delete one Workspace; False when it must wait (still terminating)."""
        name = f"chaos-{index:03d}"
        try:
            if action == "delete":
                await retrying(functools.partial(self._delete_workspace, name))
                self.report.churned += 1
            else:
                await retrying(functools.partial(self.client.create, WORKSPACE, workspace(self.plan.namespace, index)))
        except ApiError as error:
            if error.already_exists:
                return False
            raise
        return True

    async def _kill_and_restart(self) -> None:
        plan = self.plan
        restart_at = set(self.rng.sample(range(plan.kills), min(plan.apiserver_restarts, plan.kills)))
        pending = self._schedule()
        for kill in range(plan.kills + 1):
            due = [event for event in pending if event[0] <= kill]
            pending = [event for event in pending if event[0] > kill]
            for _, action, index in due:
                if not await self._apply(action, index):
                    pending.append((kill + 1, action, index))  # created again once the old one is gone
            if kill == plan.kills:
                break
            await asyncio.sleep(self.rng.uniform(*plan.lifetime_s))  # a random moment of the operator's life
            if kill in restart_at:
                # While the operator runs: its watches and connections are cut under it.
                await asyncio.to_thread(self.plane.restart, "kube-apiserver")
                self.report.apiserver_restarts += 1
            if not self.operator.alive:
                log.warning("the operator exited on its own (%s) before kill %d", self.operator.exit_code(), kill)
            self.operator.kill()
            self.report.kills += 1
            self.operator.start()
        for _, action, index in pending:  # re-creations still waiting for the old Workspace to go
            await wait_until(functools.partial(self._apply, action, index), timeout=self.plan.cleanup_timeout_s)

    async def _inject_faults(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), self.rng.uniform(*self.plan.fault_interval_s))
                return
            kind, fault = random_fault(self.rng)
            self.simulator.add_fault(fault)
            self.report.faults[kind] += 1

    async def _workspaces(self) -> list[dict[str, Any]]:
        items, _ = await self.client.list(WORKSPACE, self.plan.namespace)
        return items

    async def _all_ready(self) -> bool:
        def ready(obj: dict[str, Any]) -> bool:
            conditions = (obj.get("status") or {}).get("conditions") or []
            return any(x.get("type") == c.COND_WORKSPACE_READY and x.get("status") == "True" for x in conditions)

        items = await self._workspaces()
        self.report.not_ready = sorted(w["metadata"]["name"] for w in items if not ready(w))
        return len(items) == self.plan.workspaces and not self.report.not_ready

    async def _count_pools_per_workspace(self) -> None:
        pools: dict[str, list[str]] = collections.defaultdict(list)
        for pool in self.simulator.cluster.pools.values():
            labels = pool.properties.get("nodeLabels") or {}
            if labels.get(c.LABEL_WORKSPACE_NAMESPACE) == self.plan.namespace:
                pools[str(labels.get(c.LABEL_WORKSPACE))].append(pool.name)
        self.report.duplicate_pools = {ws: sorted(names) for ws, names in pools.items() if len(names) > 1}

    async def _delete_workspace(self, name: str) -> None:
        try:
            await self.client.delete(WORKSPACE, name, self.plan.namespace)
        except ApiError as error:
            if not error.not_found:
                raise

    async def _delete_and_look_for_leftovers(self) -> None:
        for item in await retrying(self._workspaces):
            await retrying(functools.partial(self._delete_workspace, item["metadata"]["name"]))

        selector = f"{c.LABEL_WORKSPACE_NAMESPACE}={self.plan.namespace}"

        async def nothing_left() -> bool:
            machines, _ = await self.client.list(MACHINE, label_selector=selector)
            nodes, _ = await self.client.list(NODE, label_selector=c.LABEL_AKS_AGENTPOOL)
            self.report.leftover_machines = sorted(m["metadata"]["name"] for m in machines)
            self.report.orphan_nodes = sorted(n["metadata"]["name"] for n in nodes)
            self.report.leaked_pools = sorted(self.simulator.cluster.pools)
            return not (
                await self._workspaces()
                or self.report.leftover_machines
                or self.report.orphan_nodes
                or self.report.leaked_pools
            )

        await wait_until(nothing_left, timeout=self.plan.cleanup_timeout_s)


async def run_drill(plane: ControlPlane, simulator: AksSimulator, state_dir: Path, plan: ChaosPlan) -> ChaosReport:
    return await Drill(plane, simulator, state_dir, plan).run()
