"""The informer's store, its diffing re-list and event delivery (no API server needed for these parts)."""

from __future__ import annotations

from typing import Any

from kaito_operator.runtime import NODE, FakeClock, Informer, ObjectKey, RuntimeMetrics, WatchEvent


def obj(name: str, version: str, namespace: str = "", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version, "labels": labels}}


def informer() -> Informer:
    return Informer(None, NODE, clock=FakeClock(), metrics=RuntimeMetrics())  # type: ignore[arg-type]


def test_relist_emits_exactly_what_was_missed() -> None:
    inf = informer()
    events: list[WatchEvent] = []
    inf.add_handler(events.append)
    inf._replace([obj("a", "1"), obj("b", "1"), obj("c", "1")])
    assert [(e.type, e.obj["metadata"]["name"]) for e in events] == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    events.clear()
    inf._replace([obj("a", "1"), obj("b", "2"), obj("d", "1")])  # after a 410: c deleted, b changed, d new
    assert sorted((e.type, e.obj["metadata"]["name"]) for e in events) == [
        ("ADDED", "d"),
        ("DELETED", "c"),
        ("MODIFIED", "b"),
    ]
    modified = next(e for e in events if e.type == "MODIFIED")
    assert modified.old is not None and modified.old["metadata"]["resourceVersion"] == "1"


def test_watch_events_update_the_store_and_indexes() -> None:
    inf = informer()
    inf.add_indexer("app", lambda o: [o["metadata"]["labels"].get("app", "")])
    inf._apply("ADDED", obj("a", "1", app="x"))
    inf._apply("ADDED", obj("b", "1", "ns", app="x"))
    assert {o["metadata"]["name"] for o in inf.store.by_index("app", "x")} == {"a", "b"}
    inf._apply("MODIFIED", obj("a", "2", app="y"))
    assert [o["metadata"]["name"] for o in inf.store.by_index("app", "x")] == ["b"]
    assert inf.store.get(ObjectKey("", "a"))["metadata"]["resourceVersion"] == "2"  # type: ignore[index]
    assert [o["metadata"]["name"] for o in inf.store.list(namespace="ns")] == ["b"]
    assert [o["metadata"]["name"] for o in inf.store.list(labels={"app": "y"})] == ["a"]
    inf._apply("DELETED", obj("a", "3"))
    assert inf.store.get(ObjectKey("", "a")) is None
    assert inf.store.by_index("app", "y") == []
    inf._apply("BOOKMARK", {"metadata": {"resourceVersion": "9"}})
    assert len(inf.store) == 1
    assert inf.store.get(ObjectKey("", "b")) is None and inf.store.get(ObjectKey("ns", "b")) is not None


def test_late_handlers_get_the_cache_and_resync_redelivers_it() -> None:
    inf = informer()
    inf._apply("ADDED", obj("a", "1"))
    late: list[WatchEvent] = []
    inf.add_handler(late.append)
    assert [e.type for e in late] == ["ADDED"]
    inf.resync()
    assert [e.type for e in late] == ["ADDED", "SYNC"]


def test_a_failing_handler_does_not_stop_the_others() -> None:
    inf = informer()
    seen: list[str] = []

    def broken(event: WatchEvent) -> None:
        raise RuntimeError("bug")

    inf.add_handler(broken)
    inf.add_handler(lambda e: seen.append(e.type))
    inf._apply("ADDED", obj("a", "1"))
    assert seen == ["ADDED"]


def test_write_through_replaces_only_with_newer_versions() -> None:
    inf = informer()
    inf._apply("ADDED", obj("a", "5"))
    inf.write_through(obj("a", "4"))
    assert inf.store.get(ObjectKey("", "a"))["metadata"]["resourceVersion"] == "5"  # type: ignore[index]
    inf.write_through(obj("a", "6"))
    assert inf.store.get(ObjectKey("", "a"))["metadata"]["resourceVersion"] == "6"  # type: ignore[index]
    inf.write_through(obj("new", "7"))
    assert inf.store.get(ObjectKey("", "new")) is None, "unknown objects arrive by watch only"


def test_the_cache_keeps_no_managed_fields() -> None:
    inf = informer()
    events: list[WatchEvent] = []
    inf.add_handler(events.append)
    fields = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]
    listed = obj("a", "1", app="x")
    listed["metadata"]["managedFields"] = fields
    inf._replace([listed])
    watched = obj("b", "1")
    watched["metadata"]["managedFields"] = fields
    inf._apply("ADDED", watched)
    written = obj("a", "2", app="y")
    written["metadata"]["managedFields"] = fields
    inf.write_through(written)
    for name in ("a", "b"):
        cached = inf.store.get(ObjectKey("", name))
        assert cached is not None and "managedFields" not in cached["metadata"]
        assert cached["metadata"]["resourceVersion"] in ("1", "2")
    assert inf.store.get(ObjectKey("", "a"))["metadata"]["labels"] == {"app": "y"}  # type: ignore[index]
    assert all("managedFields" not in e.obj["metadata"] for e in events)
