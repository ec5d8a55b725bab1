"""``kaito status``'s text: the estimate is the status's, counted down from now; none is never a number."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kaito.status_view import Snapshot, render

NOW = datetime(2024, 5, 1, 12, 3, 0, tzinfo=UTC)


def _workspace(status: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "falcon", "namespace": "ns", "creationTimestamp": "2024-05-01T12:00:00Z"},
        "resource": {"instanceType": "Standard_NC12s_v3", "count": 1},
        "status": status,
    }


def _machine() -> dict[str, Any]:
    return {
        "metadata": {"name": "ws1a2b3c", "creationTimestamp": "2024-05-01T12:00:10Z"},
        "spec": {"requirements": [{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["X_v3"]}]},
        "status": {"conditions": [{"type": "MachineLaunched", "status": "True"}]},
    }


def test_provisioning_shows_the_time_left_until_the_expected_ready_time() -> None:
    status = {"phase": "NodeJoining", "nodesExpectedReadyTime": "2024-05-01T12:04:30Z"}
    text = render(Snapshot("ns", [_workspace(status)], {"falcon": [_machine()]}), "falcon", NOW)
    assert "about 1m30s left" in text  # 12:04:30 - 12:03:00
    assert "NodeJoining (step 2 of 6" in text
    assert "ws1a2b3c" in text and "X_v3" in text


def test_past_the_expected_time_it_says_overdue() -> None:
    status = {"phase": "WaitingForAgentPool", "nodesExpectedReadyTime": "2024-05-01T12:02:00Z"}
    text = render(Snapshot("ns", [_workspace(status)]), "falcon", NOW)
    assert "overdue by 1m00s" in text


def test_no_estimate_in_the_status_reads_unknown() -> None:
    text = render(Snapshot("ns", [_workspace({"phase": "WaitingForAgentPool"})]), "falcon", NOW)
    assert "Estimate: unknown" in text


def test_the_namespace_view_has_one_line_per_workspace() -> None:
    text = render(Snapshot("ns", [_workspace({"phase": "Serving"})]), None, NOW)
    header, line = text.splitlines()
    assert header.split()[:2] == ["NAME", "PHASE"]
    assert line.split()[:2] == ["falcon", "Serving"]
