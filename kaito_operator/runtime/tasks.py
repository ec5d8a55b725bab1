"""Background tasks that are never lost silently.

Every long-lived task of the runtime (informer loops, controller workers, HTTP servers) is started
through a ``TaskGuard``. It keeps a reference (asyncio only holds weak ones), logs a crash with its
traceback, logs a long-lived task that returns on its own (a loop that "just ended" is a bug), and
on ``shutdown`` cancels whatever is left and waits for it, so nothing outlives the process's loop.
An optional ``on_crash`` callback lets the owner stop the process instead of limping on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskGuard:
    def __init__(self, name: str, *, on_crash: Callable[[str, BaseException], None] | None = None) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_crash = on_crash
        self._closing = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str, *, long_lived: bool = True) -> asyncio.Task[Any]:
        """Start ``coro`` as a task named ``name``; its failure is logged, never swallowed."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, long_lived))
        return task

    def _finished(self, task: asyncio.Task[Any], long_lived: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("background task %s crashed", task.get_name(), exc_info=error)
            if self._on_crash is not None:
                self._on_crash(task.get_name(), error)
        elif long_lived and not self._closing:
            log.error("background task %s exited unexpectedly", task.get_name())
            if self._on_crash is not None:
                self._on_crash(task.get_name(), RuntimeError(f"{task.get_name()} exited unexpectedly"))

    def cancel_all(self) -> None:
        """Cancel every task now, without waiting (``shutdown`` still awaits them)."""
        for task in list(self._tasks):
            task.cancel()

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def shutdown(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds for the tasks to end, then cancel the rest and wait for them."""
        self._closing = True
        tasks = list(self._tasks)
        if not tasks:
            return
        if grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
