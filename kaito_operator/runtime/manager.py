"""The Manager: shared informers and several controllers in one process, started and stopped together.

- ``informer(kind, namespace=None, label_selector=None)`` returns THE informer for that triple,
  creating it on first use, so the workspace controller and the provisioner share one Machine
  cache and one watch.
- ``controller(name, reconciler, ...)`` makes a Controller and registers it.
- ``start()`` runs every informer, waits until all caches are filled (so a reconcile after a
  restart sees what already exists and never makes it twice), then, when a ``LeaderElector`` is
  given, waits to hold the Lease, and starts the workers. Losing the Lease stops the manager and
  cancels the reconciles in flight at once: another replica may already act on the same objects.
- ``stop()`` stops taking keys, lets reconciles in flight finish within the grace period, then
  cancels the rest and the watches. A crashed background task stops the whole manager
  (``run()`` then returns 1): a process that lost its cache must not keep acting on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.controller import Controller, Reconciler
from kaito_operator.runtime.informer import Informer
from kaito_operator.runtime.kinds import ResourceKind
from kaito_operator.runtime.leader import LeaderElector, LostLeadership
from kaito_operator.runtime.metrics import RuntimeMetrics
from kaito_operator.runtime.queue import ExponentialBackoff
from kaito_operator.runtime.tasks import TaskGuard

log = logging.getLogger(__name__)

InformerKey = tuple[ResourceKind, str | None, str | None]


class Manager:
    def __init__(
        self,
        client: KubeClient,
        *,
        clock: Clock,
        metrics: RuntimeMetrics,
        resync_period: float = 600.0,
        watch_timeout: int = 300,
        shutdown_grace: float = 30.0,
        default_concurrency: int = 5,
        leader_elector: LeaderElector | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.metrics = metrics
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._shutdown_grace = shutdown_grace
        self._default_concurrency = default_concurrency
        self.leader_elector = leader_elector
        self._informers: dict[InformerKey, Informer] = {}
        self._controllers: list[Controller] = []
        self._informer_tasks = TaskGuard("informers", on_crash=self._crashed)
        self._worker_tasks = TaskGuard("workers", on_crash=self._crashed)
        self._started = False
        self._stopping = False
        self._done = asyncio.Event()
        self._running = asyncio.Event()
        self.failure: str | None = None
        self.lost_leadership = False

    # --- building ----------------------------------------------------------------------------------
    def informer(self, kind: ResourceKind, namespace: str | None = None, label_selector: str | None = None) -> Informer:
        key = (kind, namespace, label_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client,
                kind,
                clock=self.clock,
                metrics=self.metrics,
                namespace=namespace,
                label_selector=label_selector,
                resync_period=self._resync_period,
                watch_timeout=self._watch_timeout,
            )
            self._informers[key] = informer
            if self._started:
                self._informer_tasks.spawn(informer.run(), f"informer-{kind}")
        return informer

    def controller(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        concurrency: int | None = None,
        backoff: ExponentialBackoff | None = None,
        reconcile_timeout: float = 120.0,
    ) -> Controller:
        controller = Controller(
            name,
            reconciler,
            clock=self.clock,
            metrics=self.metrics,
            concurrency=concurrency or self._default_concurrency,
            backoff=backoff,
            reconcile_timeout=reconcile_timeout,
        )
        self.add(controller)
        return controller

    def add(self, controller: Controller) -> None:
        if any(c.name == controller.name for c in self._controllers):
            raise ValueError(f"a controller named {controller.name!r} is already registered")
        self._controllers.append(controller)
        if self._started:
            controller.start(self._worker_tasks)

    @property
    def controllers(self) -> list[Controller]:
        return list(self._controllers)

    # --- running -----------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Started, every cache filled, and nothing crashed: what /readyz reports."""
        return (
            self._started
            and not self._stopping
            and self.failure is None
            and all(i.has_synced for i in self._informers.values())
        )

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        for (kind, _, _), informer in self._informers.items():
            self._informer_tasks.spawn(informer.run(), f"informer-{kind}")
        if not await self._first(self._all_synced()):
            return
        if self.leader_elector is not None:
            # Caches stay warm on a standby; only the leader runs controllers.
            self._informer_tasks.spawn(self.leader_elector.run(), "leader-election")
            if not await self._first(self.leader_elector.leading.wait()):
                return
        log.info(
            "caches synced for %d informers; starting %d controllers",
            len(self._informers),
            len(self._controllers),
        )
        for controller in self._controllers:
            controller.start(self._worker_tasks)
        self._running.set()

    async def _all_synced(self) -> None:
        await asyncio.gather(*(informer.wait_synced() for informer in self._informers.values()))

    async def _first(self, awaitable: Coroutine[Any, Any, Any]) -> bool:
        """Await ``awaitable`` unless the manager stops first; True when it completed."""
        waiting = asyncio.ensure_future(awaitable)
        done = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait([waiting, done], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            done.cancel()
            await asyncio.gather(waiting, done, return_exceptions=True)
        return waiting.done() and not waiting.cancelled() and not self._stopping and self.failure is None

    async def wait_running(self) -> bool:
        """Wait until the controllers run (True) or the manager stopped first (False)."""
        await self._first(self._running.wait())
        return self._running.is_set() and self.failure is None

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for controller in self._controllers:
            controller.shut_down()
        grace = 0.0 if self.lost_leadership else self._shutdown_grace
        await self._worker_tasks.shutdown(grace=grace)
        await self._informer_tasks.shutdown()
        self._done.set()
        log.info("manager stopped")

    async def run(self, stop: asyncio.Event) -> int:
        """Start, run until ``stop`` is set or a background task crashes, then stop. Exit code."""
        stop_wait = asyncio.ensure_future(stop.wait())
        done_wait = asyncio.ensure_future(self._done.wait())
        # Starting can wait for ever (an unreachable API server, a standby waiting for the Lease):
        # a stop request must end it too.
        starting = asyncio.ensure_future(self.start())
        try:
            await asyncio.wait([starting, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if starting.done():
                starting.result()
                await asyncio.wait([stop_wait, done_wait], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (starting, stop_wait, done_wait):
                future.cancel()
            await asyncio.gather(starting, stop_wait, done_wait, return_exceptions=True)
            await self.stop()
        return 1 if self.failure is not None else 0

    def _crashed(self, task: str, error: BaseException) -> None:
        if isinstance(error, LostLeadership):
            # Another replica may hold the Lease already: no grace period for reconciles in flight,
            # not even those a graceful stop is waiting for.
            self.lost_leadership = True
            for controller in self._controllers:
                controller.shut_down()
            self._worker_tasks.cancel_all()
        if self._stopping:
            return
        self.failure = f"{task}: {error}"
        log.error("stopping: background task %s failed", task)
        self._done.set()
