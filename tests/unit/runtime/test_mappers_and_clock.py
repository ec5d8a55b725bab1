"""Event-to-key mappers, resource paths, the fake clock and the task guard."""

from __future__ import annotations

import asyncio
import logging

import pytest

from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import (
    DEPLOYMENT,
    NODE,
    FakeClock,
    ObjectKey,
    TaskGuard,
    WatchEvent,
    map_by_labels,
    map_to_owner,
    map_to_self,
)


def event(meta: dict[str, object]) -> WatchEvent:
    return WatchEvent("ADDED", {"metadata": meta})


def test_map_to_self() -> None:
    assert list(map_to_self(event({"name": "a", "namespace": "ns"}))) == [ObjectKey("ns", "a")]
    assert list(map_to_self(event({"name": "node1"}))) == [ObjectKey("", "node1")]


def test_map_to_owner_follows_the_controller_reference_of_the_right_kind() -> None:
    refs = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": False},
        {"apiVersion": "kaito.sh/v1alpha1", "kind": "Workspace", "name": "ws", "controller": True},
    ]
    mapper = map_to_owner(WORKSPACE)
    assert list(mapper(event({"name": "d", "namespace": "ns", "ownerReferences": refs}))) == [ObjectKey("ns", "ws")]
    assert list(mapper(event({"name": "d", "namespace": "ns", "ownerReferences": refs[:1]}))) == []
    other_group = [{**refs[1], "apiVersion": "other.io/v1"}]
    assert list(mapper(event({"name": "d", "namespace": "ns", "ownerReferences": other_group}))) == []
    core = map_to_owner(NODE)
    node_ref = [{"apiVersion": "v1", "kind": "Node", "name": "n1", "controller": True}]
    assert list(core(event({"name": "x", "namespace": "ns", "ownerReferences": node_ref}))) == [ObjectKey("", "n1")]


def test_map_by_labels() -> None:
    labels = {"kaito.sh/workspace": "ws", "kaito.sh/workspacenamespace": "team"}
    mapper = map_by_labels("kaito.sh/workspace", "kaito.sh/workspacenamespace")
    assert list(mapper(event({"name": "m", "labels": labels}))) == [ObjectKey("team", "ws")]
    assert list(mapper(event({"name": "m"}))) == []
    same_namespace = map_by_labels("app")
    assert list(same_namespace(event({"name": "p", "namespace": "x", "labels": {"app": "a"}}))) == [ObjectKey("x", "a")]


def test_resource_paths() -> None:
    assert NODE.path(name="n1") == "/api/v1/nodes/n1"
    assert MACHINE.path("ignored", "m1", "status") == "/apis/karpenter.sh/v1alpha5/machines/m1/status"
    assert WORKSPACE.path() == "/apis/kaito.sh/v1alpha1/workspaces"
    assert WORKSPACE.path("ns", "w") == "/apis/kaito.sh/v1alpha1/namespaces/ns/workspaces/w"
    assert DEPLOYMENT.api_version == "apps/v1" and NODE.api_version == "v1"
    assert str(ObjectKey("ns", "a")) == "ns/a" and str(ObjectKey("", "n")) == "n"


async def test_fake_clock_fires_timers_in_order_and_wakes_sleepers() -> None:
    clock = FakeClock()
    fired: list[str] = []
    clock.call_later(5, lambda: fired.append("five"))
    clock.call_later(1, lambda: fired.append("one"))
    cancelled = clock.call_later(2, lambda: fired.append("two"))
    cancelled.cancel()
    sleeper = asyncio.ensure_future(clock.sleep(3))
    await asyncio.sleep(0)
    assert clock.next_deadline() == 1
    clock.step(4)
    await asyncio.sleep(0)
    assert fired == ["one"] and sleeper.done()
    assert clock.monotonic() == 4
    clock.step(1)
    assert fired == ["one", "five"]
    assert clock.pending_timers == 0
    assert (clock.utcnow() - FakeClock().utcnow()).total_seconds() == 5


async def test_task_guard_logs_crashes_and_unexpected_exits(caplog: pytest.LogCaptureFixture) -> None:
    crashes: list[str] = []
    guard = TaskGuard("g", on_crash=lambda name, error: crashes.append(f"{name}: {error}"))

    async def crash() -> None:
        raise RuntimeError("boom")

    async def quits() -> None:
        return None

    async def forever() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        guard.spawn(crash(), "crasher")
        guard.spawn(quits(), "quitter")
        guard.spawn(quits(), "one-shot", long_lived=False)
        guard.spawn(forever(), "loop")
        for _ in range(100):
            if len(crashes) == 2:
                break
            await asyncio.sleep(0)  # one turn of the loop for the tasks to finish
    assert sorted(crashes) == ["g:crasher: boom", "g:quitter: g:quitter exited unexpectedly"]
    assert "crashed" in caplog.text
    assert guard.running == 1
    await guard.shutdown()
    assert guard.running == 0
