"""Which existing nodes a workspace uses, and in what order."""

from __future__ import annotations

from typing import Any

from kaito_operator.api.common import LabelSelector
from kaito_operator.workspace.nodes import select_nodes
from kaito_operator.workspace.selectors import implied_labels, node_requirements, selector_matches
from tests.unit.workspace.workspace_builders import node, workspace


def test_only_ready_schedulable_matching_nodes_of_the_instance_type_are_candidates() -> None:
    nodes = [
        node("good"),
        node("not-ready", ready=False),
        node("cordoned", unschedulable=True),
        node("wrong-size", instance_type="Standard_NC6s_v3"),
        node("no-size-label", instance_type=None),
        node("wrong-app", labels={"apps": "other"}),
    ]
    assert select_nodes(nodes, workspace(count=5)) == ["good"]


def test_order_is_preferred_then_current_then_provisioned_then_name() -> None:
    nodes = [
        node("a-plain"),
        node("b-provisioned", labels={"kaito.sh/machine-type": "gpu"}),
        node("c-current"),
        node("d-preferred"),
        node("e-plain"),
    ]
    ws = workspace(count=5, preferred_nodes=["d-preferred", "missing"], worker_nodes=["c-current"])
    assert select_nodes(nodes, ws) == ["d-preferred", "c-current", "b-provisioned", "a-plain", "e-plain"]
    assert select_nodes(nodes, workspace(count=2, preferred_nodes=["e-plain"])) == ["e-plain", "b-provisioned"]


def test_preferred_nodes_that_do_not_match_are_ignored() -> None:
    nodes = [node("a"), node("pref", labels={"apps": "other"})]
    assert select_nodes(nodes, workspace(count=2, preferred_nodes=["pref"])) == ["a"]


def test_match_expressions_are_honoured() -> None:
    nodes = [node("gpu-a", labels={"tier": "gold"}), node("gpu-b", labels={"tier": "bronze"}), node("gpu-c")]
    expressions: list[dict[str, Any]] = [
        {"key": "tier", "operator": "In", "values": ["gold", "silver"]},
        {"key": "spot", "operator": "DoesNotExist"},
    ]
    assert select_nodes(nodes, workspace(count=3, match_expressions=expressions)) == ["gpu-a"]


def test_selector_semantics() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "NotIn", "values": ["x"]},
                {"key": "c", "operator": "Exists"},
            ],
        }
    )
    assert selector_matches(selector, {"a": "1", "c": ""})
    assert selector_matches(selector, {"a": "1", "b": "y", "c": "z"})
    assert not selector_matches(selector, {"a": "1", "b": "x", "c": ""})
    assert not selector_matches(selector, {"a": "1"})
    assert not selector_matches(selector, {"a": "2", "c": ""})


def test_selector_as_node_requirements_and_implied_labels() -> None:
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"z": "1", "a": "2"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["gold"]},
                {"key": "spot", "operator": "DoesNotExist"},
            ],
        }
    )
    assert node_requirements(selector) == [
        {"key": "a", "operator": "In", "values": ["2"]},
        {"key": "z", "operator": "In", "values": ["1"]},
        {"key": "tier", "operator": "In", "values": ["gold"]},
        {"key": "spot", "operator": "DoesNotExist"},
    ]
    assert implied_labels(selector) == {"z": "1", "a": "2", "tier": "gold"}
