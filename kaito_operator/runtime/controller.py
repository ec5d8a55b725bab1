"""A controller: watches that feed a work queue, and workers that call a ``Reconciler`` per key.

``Reconciler.reconcile(key)`` gets an ``ObjectKey`` (never the event), reads the world from the
informer caches, makes it right, and returns a ``Result``. The loop here does the rest:
- success → the key's backoff is reset; ``Result(requeue_after=s)`` looks again in ``s`` seconds;
- ``TransientError`` / transient ``ApiError`` / any unexpected exception → retry with per-key
  exponential backoff (or the server's Retry-After);
- ``PermanentError`` → logged, no backoff retry: the reconciler has put it in a condition and an
  Event, and the next change to a watched object brings the key back (or its ``retry_after``, a
  single slow look for causes no watch shows);
- each reconcile has a time limit (a stuck API call or bug cannot take a worker for ever).
``concurrency`` workers run in parallel across keys; the queue guarantees one reconcile per key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError, PermanentError, TransientError
from kaito_operator.runtime.informer import Informer, WatchEvent
from kaito_operator.runtime.kinds import ObjectKey
from kaito_operator.runtime.mapping import Mapper, map_to_self
from kaito_operator.runtime.metrics import RuntimeMetrics
from kaito_operator.runtime.queue import ExponentialBackoff, QueueShutDown, WorkQueue
from kaito_operator.runtime.tasks import TaskGuard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks of the loop. ``Result()``: done until something changes."""

    requeue_after: float | None = None

    @staticmethod
    def soonest(*results: Result) -> Result:
        """Combine sub-step results: the earliest requeue wins."""
        delays = [r.requeue_after for r in results if r.requeue_after is not None]
        return Result(min(delays) if delays else None)


class Reconciler(Protocol):
    async def reconcile(self, key: ObjectKey) -> Result: ...


Predicate = Callable[[WatchEvent], bool]


class Controller:
    def __init__(
        self,
        name: str,
        reconciler: Reconciler,
        *,
        clock: Clock,
        metrics: RuntimeMetrics,
        concurrency: int = 5,
        backoff: ExponentialBackoff | None = None,
        reconcile_timeout: float = 120.0,
    ) -> None:
        self.name = name
        self.reconciler = reconciler
        self._clock = clock
        self._metrics = metrics
        self._concurrency = max(1, concurrency)
        self._reconcile_timeout = reconcile_timeout
        depth = metrics.queue_depth.labels(name)
        self.queue: WorkQueue[ObjectKey] = WorkQueue(clock, backoff=backoff, on_depth_change=depth.set)
        self._informers: list[Informer] = []
        self._workers: list[asyncio.Task[None]] = []
        self._busy = 0

    # --- wiring ------------------------------------------------------------------------------------
    def watch(self, informer: Informer, mapper: Mapper = map_to_self, predicate: Predicate | None = None) -> None:
        """Enqueue the keys ``mapper`` derives from each event of ``informer`` passing ``predicate``."""

        def on_event(event: WatchEvent) -> None:
            if predicate is not None and not predicate(event):
                return
            for key in mapper(event):
                self.queue.add(key)

        if informer not in self._informers:
            self._informers.append(informer)
        informer.add_handler(on_event)

    @property
    def informers(self) -> list[Informer]:
        return list(self._informers)

    # --- running -----------------------------------------------------------------------------------
    def start(self, guard: TaskGuard) -> None:
        for index in range(self._concurrency):
            self._workers.append(guard.spawn(self._work(), f"{self.name}-worker-{index}"))

    def shut_down(self) -> None:
        """Stop taking new keys; reconciles in flight finish (see Manager.stop for the grace period)."""
        self.queue.shut_down()

    async def wait_stopped(self) -> None:
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)

    @property
    def busy(self) -> int:
        return self._busy

    async def _work(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            self._busy += 1
            try:
                await self._process(key)
            finally:
                self._busy -= 1
                self.queue.done(key)

    async def _process(self, key: ObjectKey) -> None:
        started = time.perf_counter()
        outcome = "success"
        try:
            async with asyncio.timeout(self._reconcile_timeout):
                result = await self.reconciler.reconcile(key)
        except PermanentError as error:
            outcome = "permanent_error"
            self._metrics.reconcile_errors.labels(self.name, "permanent").inc()
            self.queue.forget(key)
            if error.retry_after is not None:
                self.queue.add_after(key, error.retry_after)
                log.warning(
                    "%s %s: %s (looking again in %.0fs)",
                    self.name,
                    key,
                    error,
                    error.retry_after,
                    extra={"key": str(key)},
                )
            else:
                log.warning("%s %s: %s (not retried)", self.name, key, error, extra={"key": str(key)})
        except (TransientError, ApiError, TimeoutError) as error:
            outcome = "error"
            retry_after = getattr(error, "retry_after", None)
            kind = "transient" if not isinstance(error, ApiError) or error.transient else "unexpected"
            self._metrics.reconcile_errors.labels(self.name, kind).inc()
            self._metrics.queue_retries.labels(self.name).inc()
            delay = self.queue.add_rate_limited(key, retry_after)
            log.info(
                "%s %s: %s; retrying in %.2fs",
                self.name,
                key,
                error or "timed out",
                delay,
                extra={"key": str(key)},
            )
        except Exception:
            outcome = "error"
            self._metrics.reconcile_errors.labels(self.name, "unexpected").inc()
            self._metrics.queue_retries.labels(self.name).inc()
            delay = self.queue.add_rate_limited(key)
            log.exception("%s %s: reconcile failed; retrying in %.2fs", self.name, key, delay, extra={"key": str(key)})
        else:
            self.queue.forget(key)
            if result.requeue_after is not None:
                outcome = "requeue"
                self.queue.add_after(key, result.requeue_after)
        finally:
            self._metrics.reconcile_duration.labels(self.name).observe(time.perf_counter() - started)
        self._metrics.reconciles.labels(self.name, outcome).inc()
