"""The controller runtime against the real API server: client verbs and errors, informers, Events.

(The runtime lives in kaito_operator/runtime; its integration tests sit with the workspace
controller's, which is its first user.)
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from kaito_operator.runtime import (
    EVENT,
    ApiError,
    EventRecorder,
    Manager,
    ObjectKey,
    RealClock,
    ResourceKind,
    RuntimeMetrics,
    WatchEvent,
)
from kaito_operator.testing import plain_client, wait_for_item

pytestmark = [pytest.mark.controlplane]

CONFIGMAP = ResourceKind("", "v1", "ConfigMap", "configmaps", namespaced=True)


def configmap(name: str, namespace: str, data: dict[str, str], **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    }


async def test_client_verbs_and_error_kinds(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    created = await client.create(CONFIGMAP, configmap("a", namespace, {"k": "1"}))
    with pytest.raises(ApiError) as exists:
        await client.create(CONFIGMAP, configmap("a", namespace, {"k": "1"}))
    assert exists.value.already_exists and exists.value.transient is True
    with pytest.raises(ApiError) as missing:
        await client.get(CONFIGMAP, "nope", namespace)
    assert missing.value.not_found and not missing.value.transient

    applied = await client.apply(CONFIGMAP, configmap("b", namespace, {"k": "1"}), field_manager="test")
    again = await client.apply(CONFIGMAP, configmap("b", namespace, {"k": "1"}), field_manager="test")
    assert again["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"], "apply is idempotent"

    patched = await client.patch(CONFIGMAP, "a", {"data": {"k": "2"}}, namespace=namespace)
    assert patched["data"] == {"k": "2"}
    stale = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": created["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/data/k", "value": "3"},
    ]
    with pytest.raises(ApiError) as conflict:
        await client.patch(CONFIGMAP, "a", stale, namespace=namespace, patch_type="json")
    assert conflict.value.status in (409, 422), conflict.value

    items, version = await client.list(CONFIGMAP, namespace, label_selector=None, page_size=1)
    assert {"a", "b"} <= {i["metadata"]["name"] for i in items}, "pages are followed"
    assert version
    await client.delete(CONFIGMAP, "a", namespace)
    with pytest.raises(ApiError) as gone:
        await client.delete(CONFIGMAP, "a", namespace)
    assert gone.value.not_found


async def test_a_shared_informer_sees_adds_updates_and_deletes(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    manager = Manager(client, clock=RealClock(), metrics=RuntimeMetrics())
    app = f"app-{uuid.uuid4().hex[:6]}"
    informer = manager.informer(CONFIGMAP, namespace, label_selector=f"app={app}")
    assert manager.informer(CONFIGMAP, namespace, label_selector=f"app={app}") is informer, "shared"
    await client.create(CONFIGMAP, configmap("before", namespace, {"k": "0"}, app=app))
    events: asyncio.Queue[WatchEvent] = asyncio.Queue()
    informer.add_handler(events.put_nowait)
    stop = asyncio.Event()
    task = asyncio.create_task(manager.run(stop))
    try:
        async with asyncio.timeout(20):
            assert await manager.wait_running()
            assert manager.ready
            first = await events.get()
            assert (first.type, first.obj["metadata"]["name"]) == ("ADDED", "before")
            await client.create(CONFIGMAP, configmap("c", namespace, {"k": "1"}, app=app))
            await client.create(CONFIGMAP, configmap("other", namespace, {"k": "1"}, app="someone-else"))
            await client.patch(CONFIGMAP, "c", {"data": {"k": "2"}}, namespace=namespace)
            await client.delete(CONFIGMAP, "c", namespace)
            seen = [await events.get() for _ in range(3)]
        assert [(e.type, e.obj["metadata"]["name"]) for e in seen] == [
            ("ADDED", "c"),
            ("MODIFIED", "c"),
            ("DELETED", "c"),
        ]
        assert seen[1].old is not None and seen[1].old["data"] == {"k": "1"}
        assert informer.store.get(ObjectKey(namespace, "c")) is None
        assert informer.store.get(ObjectKey(namespace, "other")) is None, "the selector filters"
    finally:
        stop.set()
        assert await task == 0


async def test_repeated_events_are_counted_not_duplicated(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    target = await client.create(CONFIGMAP, configmap("subject", namespace, {}))
    recorder = EventRecorder(client, RealClock(), component="test-recorder")
    await recorder.warning(target, "Broken", "it broke")
    await recorder.warning(target, "Broken", "it broke")
    await recorder.normal(target, "Fixed", "it works")
    # A fresh recorder (a restarted process) continues the count of the same Event.
    await EventRecorder(client, RealClock(), component="test-recorder").warning(target, "Broken", "it broke")
    broken = await wait_for_item(
        client,
        EVENT,
        namespace,
        lambda e: e["reason"] == "Broken" and e["count"] == 3,
        field_selector="involvedObject.name=subject",
    )
    events, _ = await client.list(EVENT, namespace, field_selector="involvedObject.name=subject")
    assert sorted(e["reason"] for e in events) == ["Broken", "Fixed"]
    assert broken["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert broken["type"] == "Warning" and broken["source"] == {"component": "test-recorder"}
