"""The work queue: which keys need a reconcile, and when.

Semantics (those of client-go's workqueue, which controllers are written against):
- **De-duplication.** A key that is already waiting is not added twice; ten events for one object
  cause one reconcile.
- **One reconcile per key at a time.** A key handed out by ``get()`` is "processing" until
  ``done()``. Adding it meanwhile marks it dirty; it is queued again when ``done()`` is called, so
  nothing is lost and nothing runs twice concurrently.
- **Delays.** ``add_after`` keeps the earliest pending deadline per key (``requeue_after``).
- **Backoff.** ``add_rate_limited`` waits ``base * 2**failures`` seconds, capped, with jitter,
  and grows per key until ``forget``; ``retry_after`` (a server's Retry-After) wins when given.
All waiting goes through the injected clock.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kaito_operator.runtime.clock import Clock, TimerHandle

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """``get()`` on a queue that was shut down and has nothing left."""


@dataclass
class ExponentialBackoff:
    """Per-failure delay: ``base * 2**(failures-1)`` seconds, capped at ``cap``, ± ``jitter``."""

    base: float = 0.5
    cap: float = 300.0
    jitter: float = 0.2
    """Fraction of the delay to randomise by, so failing keys do not retry in lock-step."""
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        # The exponent is bounded: after ~1000 failures 2**n no longer fits in a float (OverflowError).
        raw = min(self.cap, self.base * 2.0 ** min(max(0, failures - 1), 64))
        spread = raw * self.jitter
        jittered: float = raw + self.rng.uniform(-spread, spread)
        return max(0.0, min(self.cap, jittered))


class WorkQueue(Generic[K]):
    def __init__(
        self,
        clock: Clock,
        *,
        backoff: ExponentialBackoff | None = None,
        on_depth_change: Callable[[int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._backoff = backoff or ExponentialBackoff()
        self._on_depth_change = on_depth_change
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._delayed: dict[K, tuple[float, TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._wakeup = asyncio.Event()
        self._shut_down = False

    # --- adding ------------------------------------------------------------------------------------
    def add(self, key: K) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._ready.append(key)
        self._changed()

    def add_after(self, key: K, delay: float) -> None:
        if self._shut_down:
            return
        if delay <= 0:
            self.add(key)
            return
        deadline = self._clock.monotonic() + delay
        pending = self._delayed.get(key)
        if pending is not None:
            if pending[0] <= deadline:
                return  # an earlier wake-up is already scheduled
            pending[1].cancel()
        handle = self._clock.call_later(delay, lambda: self._fire(key))
        self._delayed[key] = (deadline, handle)

    def add_rate_limited(self, key: K, retry_after: float | None = None) -> float:
        """Re-add ``key`` after its next backoff delay (or ``retry_after``); returns the delay."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = retry_after if retry_after is not None and retry_after > 0 else self._backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts the backoff from the beginning."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def _fire(self, key: K) -> None:
        self._delayed.pop(key, None)
        self.add(key)

    # --- taking ------------------------------------------------------------------------------------
    async def get(self) -> K:
        """The next key to reconcile; waits for one. Raises QueueShutDown once shut down and empty."""
        while not self._ready:
            if self._shut_down:
                raise QueueShutDown()
            self._wakeup.clear()
            await self._wakeup.wait()
        key = self._ready.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        self._changed()
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shut_down:
            self._ready.append(key)
            self._changed()

    # --- state -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ready)

    @property
    def processing(self) -> int:
        return len(self._processing)

    @property
    def delayed(self) -> int:
        return len(self._delayed)

    def is_delayed(self, key: K) -> bool:
        return key in self._delayed

    def shut_down(self) -> None:
        """Stop handing out keys: waiting ``get()`` calls raise QueueShutDown; delays are dropped."""
        self._shut_down = True
        for _, handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        self._ready.clear()
        self._dirty.clear()
        self._changed()

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down

    def _changed(self) -> None:
        self._wakeup.set()
        if self._on_depth_change is not None:
            self._on_depth_change(len(self._ready))
