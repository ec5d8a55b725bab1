"""The admission rules as pure functions. Kaito v0.1's messages are written out here from
kaito-compat.md §4 (the upstream fact), not imported from the code under test."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kaito_operator.workspace.validation import Limits, validate_create, validate_update

LIMITS = Limits(max_count=10)


def workspace(**resource: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "workspace-falcon-7b", "namespace": "default", "uid": "u-1"},
        "resource": {
            "count": 1,
            "instanceType": "Standard_NC12s_v3",
            "labelSelector": {"matchLabels": {"apps": "falcon-7b"}},
            **resource,
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def messages(obj: dict[str, Any]) -> list[str]:
    return [str(error) for error in validate_create(obj, LIMITS)]


def test_the_kaito_example_is_valid() -> None:
    assert validate_create(workspace(), LIMITS) == []


def test_neither_preset_nor_template() -> None:
    obj = workspace()
    obj["inference"] = {}
    assert messages(obj) == ["inference: Preset or Template must be specified"]


def test_preset_and_template_together() -> None:
    obj = workspace()
    obj["inference"]["template"] = {"spec": {"containers": []}}
    assert messages(obj) == ["inference: Preset and Template cannot be set at the same time"]


def test_unsupported_preset_name_keeps_kaitos_message() -> None:
    obj = workspace()
    obj["inference"]["preset"]["name"] = "gpt-9"
    [message] = messages(obj)
    assert message.startswith("inference.preset.name: Unsupported preset name gpt-9")


def test_preset_names_are_case_insensitive_as_in_kaito() -> None:
    obj = workspace()
    obj["inference"]["preset"]["name"] = "Falcon-7B"
    assert messages(obj) == []


def test_private_access_needs_an_image() -> None:
    obj = workspace()
    obj["inference"]["preset"] = {"name": "llama-2-7b", "accessMode": "private", "presetOptions": {}}
    assert messages(obj) == [
        "inference.preset.presetOptions.image: When AccessMode is private, an image must be provided in PresetOptions"
    ]


def test_unsupported_instance_type_lists_the_skus() -> None:
    [message] = messages(workspace(instanceType="Standard_E4s_v3"))
    assert message.startswith("resource.instanceType: Unsupported instance type Standard_E4s_v3. Supported SKUs: ")
    assert "Standard_NC12s_v3" in message


def test_a_known_size_must_be_spelled_as_nodes_carry_it() -> None:
    # Found by the fuzzer: Azure accepts any case, but the node label is the canonical name, and
    # nodes are matched on it exactly, so the Workspace would wait for ever.
    [message] = messages(workspace(instanceType="standard_nc12s_v3"))
    assert message.startswith("resource.instanceType: standard_nc12s_v3 must be spelled Standard_NC12s_v3")


def test_a_preset_needs_a_gpu_size() -> None:
    [message] = messages(workspace(instanceType="Standard_D4s_v3"))
    assert "resource.instanceType" in message and "Standard_D4s_v3" in message and "GPU" in message


def test_a_template_may_run_on_a_cpu_size() -> None:
    obj = workspace(instanceType="Standard_D4s_v3")
    obj["inference"] = {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}
    assert messages(obj) == []


def test_falcon_40b_does_not_fit_one_v100() -> None:
    # falcon-40b needs 2 GPUs (Kaito v0.1's requirements); NC6s_v3 is one 16 GiB V100 (Azure's size table).
    obj = workspace(instanceType="Standard_NC6s_v3")
    obj["inference"]["preset"]["name"] = "falcon-40b"
    found = messages(obj)
    assert (
        "resource.instanceType: Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1 per node, "
        "but preset falcon-40b requires at least 2 per node"
    ) in found
    assert any(m.startswith("resource.instanceType: Insufficient total GPU memory: Instance type") for m in found)


@pytest.mark.parametrize("count", [0, 11, 10000])
def test_count_outside_the_limit(count: int) -> None:
    [message] = [m for m in messages(workspace(count=count)) if m.startswith("resource.count")]
    assert str(count) in message and "between 1 and 10" in message


@pytest.mark.parametrize("name", ["a.b", "Upper", "9lives", "x" * 64, "ends-"])
def test_the_name_must_be_a_dns_1035_label(name: str) -> None:
    obj = workspace()
    obj["metadata"]["name"] = name
    [message] = messages(obj)
    assert message.startswith("metadata.name:") and repr(name) in message and "63" in message


@pytest.mark.parametrize(
    "expression",
    [
        {"key": "apps", "operator": "Exists"},
        {"key": "apps", "operator": "In", "values": ["a", "b"]},
        {"key": "apps", "operator": "NotIn", "values": ["a"]},
    ],
)
def test_only_match_labels_or_single_value_in(expression: dict[str, Any]) -> None:
    obj = workspace(labelSelector={"matchExpressions": [expression]})
    [message] = messages(obj)
    assert message.startswith(
        "resource.labelSelector.matchExpressions[0]: Only allow matchLabels or 'IN' matchExpression"
    )


def test_a_single_value_in_is_allowed() -> None:
    obj = workspace(labelSelector={"matchExpressions": [{"key": "apps", "operator": "In", "values": ["x"]}]})
    assert messages(obj) == []


def test_a_selector_our_nodes_can_never_carry() -> None:
    obj = workspace(labelSelector={"matchLabels": {"node.kubernetes.io/instance-type": "Standard_NC6s_v3"}})
    [message] = messages(obj)
    assert "node.kubernetes.io/instance-type" in message and "Standard_NC12s_v3" in message


def test_contradicting_selector_parts() -> None:
    obj = workspace(
        labelSelector={
            "matchLabels": {"apps": "a"},
            "matchExpressions": [{"key": "apps", "operator": "In", "values": ["b"]}],
        }
    )
    [message] = messages(obj)
    assert "contradicts" in message


def test_invalid_label_values_are_named() -> None:
    [message] = messages(workspace(labelSelector={"matchLabels": {"apps": "has space"}}))
    assert "resource.labelSelector.matchLabels" in message and "'has space'" in message


# --- updates ------------------------------------------------------------------------------------------
def test_metadata_only_updates_pass_even_on_an_invalid_workspace() -> None:
    old = workspace(count=99)
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = ["workspace.finalizer.kaito.sh"]
    assert validate_update(old, new, LIMITS) == []


@pytest.mark.parametrize(
    "addition",
    [
        lambda ws: ws["inference"]["preset"].update(presetOptions={}),
        lambda ws: ws["inference"]["preset"].update(accessMode=""),
        lambda ws: ws["inference"]["preset"].update(accessMode="public", presetOptions={"imagePullSecrets": []}),
        lambda ws: ws["resource"].update(labelSelector={"matchLabels": {"apps": "falcon-7b"}, "matchExpressions": []}),
    ],
)
def test_empty_values_change_nothing(addition: Any) -> None:
    old = workspace()
    new = copy.deepcopy(old)
    addition(new)
    assert validate_update(old, new, LIMITS) == []


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("resource.count", lambda ws: ws["resource"].update(count=2)),
        ("resource.instanceType", lambda ws: ws["resource"].update(instanceType="Standard_NC24s_v3")),
        ("resource.labelSelector", lambda ws: ws["resource"].update(labelSelector={"matchLabels": {"a": "b"}})),
        ("inference.preset", lambda ws: ws["inference"]["preset"].update(name="falcon-7b-instruct")),
    ],
)
def test_immutable_fields(field: str, change: Any) -> None:
    old = workspace()
    new = copy.deepcopy(old)
    change(new)
    assert [str(e) for e in validate_update(old, new, LIMITS)] == [f"{field}: field is immutable"]


def test_a_template_cannot_be_added_later() -> None:
    old = workspace()
    old["inference"] = {"template": {"spec": {}}}
    new = copy.deepcopy(old)
    new["inference"] = {"preset": {"name": "falcon-7b"}}
    assert "inference.template: field cannot be unset/set if it was set/unset" in [
        str(e) for e in validate_update(old, new, LIMITS)
    ]


def test_a_template_may_change() -> None:
    old = workspace()
    old["inference"] = {"template": {"spec": {"containers": [{"name": "a", "image": "nginx:1"}]}}}
    new = copy.deepcopy(old)
    new["inference"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert validate_update(old, new, LIMITS) == []


def test_a_deleted_workspace_can_always_lose_its_finalizer() -> None:
    old = workspace(count=99)
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    new = copy.deepcopy(old)
    new["resource"]["count"] = 98
    assert validate_update(old, new, LIMITS) == []
