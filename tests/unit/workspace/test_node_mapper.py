"""Node events reach the Workspaces whose nodes they can be; the mapper's parse of each Workspace is
kept per resourceVersion, so a changed Workspace is judged by its new spec."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import FakeClock, Informer, ObjectKey, RuntimeMetrics, WatchEvent
from kaito_operator.testing import INSTANCE_TYPE, gpu_node
from kaito_operator.workspace.controller import _workspaces_for_node


def workspace(version: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "w1", "namespace": "ns", "resourceVersion": version},
        "resource": {"instanceType": INSTANCE_TYPE, "labelSelector": {"matchLabels": {"app": app}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def ready(node: dict[str, Any]) -> dict[str, Any]:
    node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    return node


def test_a_changed_workspace_is_matched_by_its_new_selector() -> None:
    workspaces = Informer(None, WORKSPACE, clock=FakeClock(), metrics=RuntimeMetrics())  # type: ignore[arg-type]
    mapper = _workspaces_for_node(workspaces)
    blue = WatchEvent("ADDED", ready(gpu_node("n-blue", labels={"app": "blue"})))
    green = WatchEvent("ADDED", ready(gpu_node("n-green", labels={"app": "green"})))

    workspaces._replace([workspace("1", "blue")])
    assert mapper(blue) == [ObjectKey("ns", "w1")]
    assert mapper(green) == []

    workspaces._apply("MODIFIED", workspace("2", "green"))
    assert mapper(green) == [ObjectKey("ns", "w1")], "parsed again at the new resourceVersion"
    assert mapper(blue) == []

    workspaces._apply("DELETED", workspace("3", "green"))
    assert mapper(green) == []
