"""Time, injected: every component that waits, times out or stamps a time takes a ``Clock``.

Production code uses ``RealClock`` (the event loop's monotonic time and the system's UTC time).
Tests use ``FakeClock`` and move time with ``step()``, so backoffs, ``requeue_after`` and resync
periods are exercised in microseconds instead of being slept through.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """The only source of time for the runtime and the controllers."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards; only differences mean anything."""
        ...

    def utcnow(self) -> datetime:
        """Wall-clock time (timezone-aware, UTC), for timestamps written to the API server."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (synchronously, on the event loop) after ``delay`` seconds."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``; used only by background loops, never inside a reconcile."""
        ...


class RealClock:
    """The event loop's clock. Must be used from inside a running loop."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    def utcnow(self) -> datetime:
        return datetime.now(UTC)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class _FakeTimer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that only moves when the test calls ``step()``.

    Timers whose deadline is reached fire in deadline order during ``step()``; sleepers are woken
    the same way (they resume at the next turn of the event loop, so a test usually does
    ``clock.step(5)`` and then awaits the condition it expects).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = 0.0
        self._start = start or datetime(2024, 1, 1, tzinfo=UTC)
        self._timers: list[tuple[float, int, _FakeTimer, Callable[[], None]]] = []
        self._sequence = itertools.count()

    def monotonic(self) -> float:
        return self._now

    def utcnow(self) -> datetime:
        return self._start + timedelta(seconds=self._now)

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer()
        heapq.heappush(self._timers, (self._now + max(0.0, delay), next(self._sequence), timer, callback))
        return timer

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def pending_timers(self) -> int:
        return sum(1 for _, _, timer, _ in self._timers if not timer.cancelled)

    def next_deadline(self) -> float | None:
        """When the earliest live timer fires, or None when nothing is scheduled."""
        live = [deadline for deadline, _, timer, _ in self._timers if not timer.cancelled]
        return min(live) if live else None

    def step(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and fire every timer that falls due, in order."""
        target = self._now + max(0.0, seconds)
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer, callback = heapq.heappop(self._timers)
            self._now = max(self._now, deadline)
            if not timer.cancelled:
                callback()
        self._now = target
