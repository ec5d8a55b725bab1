"""Informers: a local, always-current cache of one resource type, fed by list + watch.

An ``Informer`` lists the resource once, then watches from the list's resourceVersion with
bookmarks on, keeps every object in its ``Store`` and tells its handlers what changed. It is the
client-go reflector pattern:
- the watch ends when the server's timeout (randomised, ~5-10 min) expires, and is resumed from the
  last resourceVersion seen (bookmarks keep that fresh even for quiet resources);
- **410 Gone** (the resourceVersion was compacted away) re-lists, diffs the fresh list against the
  cache and emits the ADDED / MODIFIED / DELETED events that were missed (an object made and
  deleted in the gap has none: relist handlers learn that a list has been applied);
- other failures retry with backoff (through the clock) and resume;
- every ``resync_period`` all cached objects are re-delivered as SYNC events, so a controller that
  dropped something (a bug, a lost write) gets another look without a full re-list.
One informer per (kind, namespace, label selector) is shared by every controller in the process
(see manager.py); handlers must be quick and synchronous (map to keys, enqueue, return).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Literal

from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import ObjectKey, ResourceKind, key_of
from kaito_operator.runtime.metrics import RuntimeMetrics
from kaito_operator.runtime.queue import ExponentialBackoff

log = logging.getLogger(__name__)

EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]


@dataclass(frozen=True)
class WatchEvent:
    type: EventType
    obj: dict[str, Any]
    """The object now (for DELETED: its last known state)."""
    old: dict[str, Any] | None = None
    """The cached object before a MODIFIED event; None otherwise."""


Handler = Callable[[WatchEvent], None]
IndexFunc = Callable[[dict[str, Any]], Iterable[str]]


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _newer(candidate: str, current: str) -> bool:
    """resourceVersions are opaque, but etcd's are integers; compare them only when both are."""
    try:
        return int(candidate) > int(current)
    except ValueError:
        return False


def labels_match(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = (obj.get("metadata") or {}).get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


class Store:
    """Objects by key, with optional secondary indexes. Read-only for everyone but its informer."""

    def __init__(self) -> None:
        self._items: dict[ObjectKey, dict[str, Any]] = {}
        self._indexers: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[ObjectKey]]] = {}

    # --- reads -------------------------------------------------------------------------------------
    def get(self, key: ObjectKey) -> dict[str, Any] | None:
        return self._items.get(key)

    def keys(self) -> list[ObjectKey]:
        return list(self._items)

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        return [self._items[key] for key in self._indexes[index].get(value, ())]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[ObjectKey]:
        return iter(list(self._items))

    # --- writes (the informer's) -------------------------------------------------------------------
    def add_indexer(self, name: str, function: IndexFunc) -> None:
        if name in self._indexers:
            return
        self._indexers[name] = function
        self._indexes[name] = {}
        for key, obj in self._items.items():
            for value in function(obj):
                self._indexes[name].setdefault(value, set()).add(key)

    def put(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name, function in self._indexers.items():
            for value in function(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: ObjectKey) -> dict[str, Any] | None:
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    # Defined last: inside the class body the name ``list`` means this method.
    def list(self, namespace: str | None = None, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        return [
            obj
            for key, obj in self._items.items()
            if (namespace is None or key.namespace == namespace) and (not labels or labels_match(obj, labels))
        ]

    def _unindex(self, key: ObjectKey, obj: dict[str, Any]) -> None:
        for name, function in self._indexers.items():
            for value in function(obj):
                bucket = self._indexes[name].get(value)
                if bucket is not None:
                    bucket.discard(key)
                    if not bucket:
                        del self._indexes[name][value]


class Informer:
    def __init__(
        self,
        client: KubeClient,
        kind: ResourceKind,
        *,
        clock: Clock,
        metrics: RuntimeMetrics,
        namespace: str | None = None,
        label_selector: str | None = None,
        resync_period: float = 600.0,
        watch_timeout: int = 300,
        backoff: ExponentialBackoff | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.store = Store()
        self._client = client
        self._clock = clock
        self._metrics = metrics
        self._resync_period = resync_period
        self._watch_timeout = watch_timeout
        self._backoff = backoff or ExponentialBackoff(base=0.5, cap=30.0)
        self._handlers: list[Handler] = []
        self._relist_handlers: list[Callable[[int], None]] = []
        self._lists_begun = 0
        self._synced = asyncio.Event()
        self._rng = random.Random()

    def __repr__(self) -> str:
        return f"Informer({self.kind}, namespace={self.namespace!r}, selector={self.label_selector!r})"

    # --- subscribers -------------------------------------------------------------------------------
    def add_handler(self, handler: Handler) -> None:
        """Subscribe; a late subscriber first receives the current cache as ADDED events."""
        self._handlers.append(handler)
        for obj in self.store.list():
            self._deliver(handler, WatchEvent("ADDED", obj))

    def add_relist_handler(self, handler: Callable[[int], None]) -> None:
        """Call ``handler(number)`` after each list (the first and every re-list) has been applied,
        after its events. An object made and deleted while the watch was down (a 410 re-list) never
        has an event; a list numbered above ``list_mark`` taken after the write has seen it gone."""
        self._relist_handlers.append(handler)

    @property
    def list_mark(self) -> int:
        """How many lists have begun: every list numbered above this one begins after now."""
        return self._lists_begun

    def add_indexer(self, name: str, function: IndexFunc) -> None:
        self.store.add_indexer(name, function)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def write_through(self, obj: dict[str, Any]) -> None:
        """Put an object we just wrote into the cache if it is newer than what the cache holds.

        The watch event for our own write arrives a little later; until then, a reconcile woken by
        something else would see the stale object and redo the write. No events are emitted.
        """
        current = self.store.get(key_of(obj))
        if current is not None and _newer(resource_version(obj), resource_version(current)):
            _strip_managed_fields(obj)
            self.store.put(obj)

    # --- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        """List, watch, re-list on 410, resync periodically; runs until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._list_and_watch())
            if self._resync_period > 0:
                group.create_task(self._resync_loop())

    async def _list_and_watch(self) -> None:
        version: str | None = None
        cause = "start"
        failures = 0
        while True:
            if version is None:
                self._lists_begun += 1
                number = self._lists_begun
                try:
                    items, version = await self._client.list(
                        self.kind, self.namespace, label_selector=self.label_selector
                    )
                except ApiError as error:
                    failures += 1
                    delay = self._backoff.delay(failures)
                    log.warning("listing %s failed (%s); retrying in %.1fs", self.kind, error, delay)
                    await self._clock.sleep(delay)
                    continue
                self._metrics.watch_restarts.labels(str(self.kind), cause).inc()
                self._replace(items)
                self._synced.set()
                for handler in list(self._relist_handlers):
                    try:
                        handler(number)
                    except Exception:  # one broken handler must not stop the cache for everyone
                        log.exception("relist handler for %s failed", self.kind)
            try:
                timeout = int(self._watch_timeout * (1 + self._rng.random()))
                stream = self._client.watch(
                    self.kind,
                    self.namespace,
                    resource_version=version,
                    timeout_seconds=timeout,
                    label_selector=self.label_selector,
                )
                async with aclosing(stream):  # closes the HTTP response even when cancelled
                    async for event in stream:
                        failures = 0
                        obj = event.get("object") or {}
                        version = resource_version(obj) or version
                        self._apply(str(event.get("type")), obj)
            except ApiError as error:
                if error.gone:
                    log.info("watch of %s expired (%s); re-listing", self.kind, error.api_message)
                    version, cause = None, "gone"
                    continue
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("watch of %s failed (%s); resuming in %.1fs", self.kind, error, delay)
                if failures >= 5:
                    version, cause = None, "error"  # something is persistently wrong: start over
                await self._clock.sleep(delay)

    async def _resync_loop(self) -> None:
        await self.wait_synced()
        while True:
            await self._clock.sleep(self._resync_period)
            self.resync()

    def resync(self) -> None:
        """Re-deliver every cached object as a SYNC event."""
        for obj in self.store.list():
            self._emit(WatchEvent("SYNC", obj, obj))

    # --- cache updates -----------------------------------------------------------------------------
    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        _strip_managed_fields(obj)
        if event_type in ("ADDED", "MODIFIED"):
            obj.setdefault("apiVersion", self.kind.api_version)
            obj.setdefault("kind", self.kind.kind)
            old = self.store.put(obj)
            if old is None:
                self._emit(WatchEvent("ADDED", obj))
            else:
                self._emit(WatchEvent("MODIFIED", obj, old))
        elif event_type == "DELETED":
            old = self.store.remove(key_of(obj))
            self._emit(WatchEvent("DELETED", obj if old is None else {**old, **obj}))
        # BOOKMARK: only the resourceVersion matters, already taken by the caller.

    def _replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            _strip_managed_fields(item)
        fresh = {key_of(obj): obj for obj in items}
        for key in self.store:
            if key not in fresh:
                old = self.store.remove(key)
                if old is not None:
                    self._emit(WatchEvent("DELETED", old))
        for obj in fresh.values():
            current = self.store.get(key_of(obj))
            if current is None:
                self.store.put(obj)
                self._emit(WatchEvent("ADDED", obj))
            elif resource_version(current) != resource_version(obj):
                self.store.put(obj)
                self._emit(WatchEvent("MODIFIED", obj, current))

    def _emit(self, event: WatchEvent) -> None:
        for handler in list(self._handlers):
            self._deliver(handler, event)

    def _deliver(self, handler: Handler, event: WatchEvent) -> None:
        try:
            handler(event)
        except Exception:  # one broken mapper must not stop the cache for everyone
            log.exception("event handler for %s failed on %s %s", self.kind, event.type, key_of(event.obj))


def _strip_managed_fields(obj: dict[str, Any]) -> None:
    """Server-side apply's field ownership records are often the larger half of an object and no
    controller reads them: the cache does not keep them (client-go's informers drop them too)."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)
