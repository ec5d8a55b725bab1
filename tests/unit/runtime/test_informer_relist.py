"""The informer's list + watch loop against a scripted client: resume, bookmarks, 410 Gone, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from kaito_operator.runtime import NODE, ApiError, FakeClock, Informer, ObjectKey, RuntimeMetrics, WatchEvent


def obj(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ScriptedClient:
    """Plays back lists and watch streams; records the resourceVersion each watch started from."""

    def __init__(self, lists: list[tuple[list[dict[str, Any]], str]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watched_from: list[str] = []
        self.exhausted = asyncio.Event()

    async def list(self, kind: Any, namespace: Any = None, **_: Any) -> tuple[list[dict[str, Any]], str]:
        return self.lists.pop(0)

    async def watch(self, kind: Any, namespace: Any = None, **kwargs: Any) -> AsyncGenerator[dict[str, Any], None]:
        self.watched_from.append(kwargs["resource_version"])
        if not self.watches:
            self.exhausted.set()
            await asyncio.Event().wait()  # a quiet watch, until cancelled
        for item in self.watches.pop(0):
            if isinstance(item, BaseException):
                raise item
            yield item


async def run_until_exhausted(client: ScriptedClient, clock: FakeClock) -> tuple[Informer, list[WatchEvent]]:
    informer = Informer(client, NODE, clock=clock, metrics=RuntimeMetrics(), resync_period=0)  # type: ignore[arg-type]
    events: list[WatchEvent] = []
    informer.add_handler(events.append)
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(200):
            if client.exhausted.is_set():
                break
            clock.step(60)  # fire any backoff timer; nothing else waits on the clock
            await asyncio.sleep(0)
        assert client.exhausted.is_set(), "the script was not played to the end"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return informer, events


async def test_watch_resumes_from_the_last_version_and_bookmarks_advance_it() -> None:
    client = ScriptedClient(
        lists=[([obj("a", "10")], "10")],
        watches=[
            [{"type": "MODIFIED", "object": obj("a", "11")}, {"type": "BOOKMARK", "object": obj("", "15")}],
            [{"type": "ADDED", "object": obj("b", "16")}],
        ],
    )
    informer, events = await run_until_exhausted(client, FakeClock())
    assert client.watched_from == ["10", "15", "16"]
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b")]
    assert informer.has_synced


async def test_gone_relists_and_emits_what_was_missed() -> None:
    client = ScriptedClient(
        lists=[([obj("a", "10"), obj("b", "10")], "10"), ([obj("a", "30"), obj("c", "25")], "30")],
        watches=[[ApiError(410, "Expired", "too old resource version: 10 (20)")]],
    )
    informer, events = await run_until_exhausted(client, FakeClock())
    assert client.watched_from == ["10", "30"]
    assert sorted((e.type, e.obj["metadata"]["name"]) for e in events[2:]) == [
        ("ADDED", "c"),
        ("DELETED", "b"),
        ("MODIFIED", "a"),
    ]
    assert sorted(k.name for k in informer.store) == ["a", "c"]
    assert informer.store.get(ObjectKey("", "a")) == obj("a", "30")


async def test_other_errors_back_off_then_resume_without_relisting() -> None:
    client = ScriptedClient(
        lists=[([], "5")],
        watches=[
            [ApiError(0, "ServerDisconnectedError", "connection lost")],
            [ApiError(500, "InternalError", "etcd hiccup")],
            [{"type": "ADDED", "object": obj("x", "6")}],
        ],
    )
    informer, _ = await run_until_exhausted(client, FakeClock())
    assert client.watched_from == ["5", "5", "5", "6"]
    assert client.lists == [], "one list only"
    assert informer.store.get(ObjectKey("", "x")) is not None


async def test_relist_handlers_hear_each_applied_list_by_its_number() -> None:
    client = ScriptedClient(
        lists=[([obj("a", "10")], "10"), ([], "30")],
        watches=[[ApiError(410, "Expired", "too old resource version: 10 (20)")]],
    )
    informer = Informer(client, NODE, clock=FakeClock(), metrics=RuntimeMetrics(), resync_period=0)  # type: ignore[arg-type]
    assert informer.list_mark == 0
    heard: list[tuple[int, int]] = []
    informer.add_relist_handler(lambda number: heard.append((number, len(informer.store))))
    task = asyncio.create_task(informer.run())
    try:
        await client.exhausted.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert heard == [(1, 1), (2, 0)], "after each list is in the cache"
    assert informer.list_mark == 2
