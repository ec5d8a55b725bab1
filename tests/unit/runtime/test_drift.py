"""Drift between a controller's intent and the live object, and the JSON patch that restores it."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import jsonpatch
import pytest

from kaito_operator.runtime.drift import Difference, find_drift, quantity, restore_patch

INTENT: dict[str, Any] = {
    "metadata": {
        "name": "ws",
        "namespace": "ns",
        "labels": {"app": "ws"},
        "annotations": {"kaito.sh/rendered-hash": "h"},
    },
    "spec": {
        "replicas": 2,
        "template": {
            "spec": {
                "containers": [
                    {
                        "name": "ws",
                        "command": ["serve", "--port", "5000"],
                        "resources": {"requests": {"cpu": "0.5", "nvidia.com/gpu": "1"}},
                        "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                    }
                ],
                "tolerations": [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
                "volumes": [],
            }
        },
    },
}


def served(intent: dict[str, Any]) -> dict[str, Any]:
    """The intent as an API server returns it: defaults filled in, quantities canonical, empties dropped."""
    live = copy.deepcopy(intent)
    live["metadata"].update(resourceVersion="41", uid="u", generation=3)
    pod = live["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst")
    pod.pop("volumes")
    container = pod["containers"][0]
    container.update(imagePullPolicy="IfNotPresent", terminationMessagePath="/dev/termination-log")
    container["resources"]["requests"]["cpu"] = "500m"
    live["status"] = {"replicas": 2}
    return live


def test_an_object_holding_the_intent_has_no_drift_whatever_the_server_added() -> None:
    assert find_drift(INTENT, served(INTENT)) == []


def test_fields_nobody_intended_are_not_drift() -> None:
    live = served(INTENT)
    live["metadata"]["annotations"]["team"] = "search"  # a user's annotation
    live["metadata"]["labels"]["cost-centre"] = "42"
    live["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "proxy"})  # a webhook's
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "INJECTED", "value": "x"})
    assert find_drift(INTENT, live) == []


def test_a_scaled_deployment_drifts_at_replicas_only() -> None:
    live = served(INTENT)
    live["spec"]["replicas"] = 0
    assert find_drift(INTENT, live) == [Difference(("spec", "replicas"), "replace", 2)]


def test_named_list_elements_are_matched_by_name_wherever_they_sit() -> None:
    intent = {"spec": {"ports": [{"name": "http", "port": 80}, {"name": "metrics", "port": 9090}]}}
    live = {"spec": {"ports": [{"name": "metrics", "port": 9090, "nodePort": 31000}, {"name": "http", "port": 8080}]}}
    assert find_drift(intent, live) == [Difference(("spec", "ports", 1, "port"), "replace", 80)]
    del live["spec"]["ports"][1]
    assert find_drift(intent, live) == [Difference(("spec", "ports", "-"), "add", {"name": "http", "port": 80})]


def test_an_atomic_list_that_differs_is_replaced_whole() -> None:
    live = served(INTENT)
    live["spec"]["template"]["spec"]["containers"][0]["command"] = ["serve", "--port", "6000"]
    live["spec"]["template"]["spec"]["tolerations"].append({"key": "other", "operator": "Exists"})
    command = INTENT["spec"]["template"]["spec"]["containers"][0]["command"]
    tolerations = INTENT["spec"]["template"]["spec"]["tolerations"]
    assert find_drift(INTENT, live) == [
        Difference(("spec", "template", "spec", "containers", 0, "command"), "replace", command),
        Difference(("spec", "template", "spec", "tolerations"), "replace", tolerations),
    ]


def test_a_removed_intended_annotation_is_added_back() -> None:
    live = served(INTENT)
    del live["metadata"]["annotations"]["kaito.sh/rendered-hash"]
    [difference] = find_drift(INTENT, live)
    assert difference.pointer == "/metadata/annotations/kaito.sh~1rendered-hash"  # RFC 6901 escaping
    assert (difference.op, difference.value) == ("add", "h")


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("0.5", Decimal("0.5")), ("1Gi", Decimal(1073741824)), ("2e3", Decimal(2000)), (4, 4)],
)
def test_quantities_compare_by_value(text: str | int, value: Decimal) -> None:
    assert quantity(text) == value


def test_a_quantity_that_changed_value_is_drift() -> None:
    live = served(INTENT)
    live["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "250m"
    [difference] = find_drift(INTENT, live)
    assert difference.path[-2:] == ("requests", "cpu")


def _with_quantities(size_limit: str, overhead_memory: str, label: str) -> dict[str, Any]:
    intent = copy.deepcopy(INTENT)
    intent["metadata"]["labels"]["size"] = label
    pod = intent["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size_limit}}]
    pod["overhead"] = {"memory": overhead_memory}
    return intent


def test_every_quantity_of_a_pod_template_compares_by_value_not_spelling() -> None:
    # The API server serves each resource.Quantity in canonical form: 1024Mi comes back as 1Gi,
    # 0.5Gi as 512Mi (k8s.io/apimachinery resource.Quantity's CanonicalizeBytes).
    intent = _with_quantities("1024Mi", "0.5Gi", "1Gi")
    live = copy.deepcopy(intent)
    pod = live["spec"]["template"]["spec"]
    pod["volumes"][0]["emptyDir"]["sizeLimit"] = "1Gi"
    pod["overhead"]["memory"] = "512Mi"
    assert find_drift(intent, live) == []


def test_a_string_outside_a_quantity_field_is_compared_as_written() -> None:
    intent = _with_quantities("1Gi", "512Mi", "1024Mi")
    live = copy.deepcopy(intent)
    live["metadata"]["labels"]["size"] = "1Gi"  # a label is text, whatever it looks like
    live["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] = "2Gi"
    assert {d.path[-1] for d in find_drift(intent, live)} == {"size", "sizeLimit"}


def test_the_restore_patch_brings_the_live_object_back_to_the_intent_and_keeps_foreign_fields() -> None:
    live = served(INTENT)
    live["metadata"]["annotations"]["team"] = "search"
    live["spec"]["replicas"] = 0
    live["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "INJECTED", "value": "x"}]
    patch = restore_patch(find_drift(INTENT, live), "41")
    assert patch[0] == {"op": "replace", "path": "/metadata/resourceVersion", "value": "41"}
    restored = jsonpatch.apply_patch(live, patch)  # an independent RFC 6902 implementation
    assert find_drift(INTENT, restored) == []
    assert restored["metadata"]["annotations"]["team"] == "search"
    assert {"name": "INJECTED", "value": "x"} in restored["spec"]["template"]["spec"]["containers"][0]["env"]
