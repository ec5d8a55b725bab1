"""A Machine becomes the agent-pool request gpu-provisioner would send (pure, no Azure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from gpu_provisioner import agentpool
from gpu_provisioner.aks import pool_body
from gpu_provisioner.errors import InvalidParameters

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def a_machine(name: str = "ws1a2b3c4d5", **overrides: Any) -> dict[str, Any]:
    """A Machine as Kaito v0.1 makes it, with optional overrides of metadata/spec parts."""
    machine: dict[str, Any] = {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "labels": {
                "karpenter.sh/provisioner-name": "default",
                "kaito.sh/workspace": "workspace-falcon-7b",
                "kaito.sh/workspacenamespace": "default",
                "apps": "falcon-7b",
            },
            "annotations": {},
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]},
                {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
                {"key": "kaito.sh/machine-type", "operator": "In", "values": ["gpu"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "120Gi"}},
        },
    }
    for part, value in overrides.items():
        section, _, key = part.partition("__")
        machine[section][key] = value
    return machine


def wire(machine: dict[str, Any]) -> dict[str, Any]:
    spec = agentpool.instance_spec(machine, cluster_name="kaito-cluster", now=NOW)
    body: dict[str, Any] = json.loads(json.dumps(pool_body(spec).as_dict()))
    return body


def test_the_request_body_has_gpu_provisioner_fields_and_the_disk_in_gib() -> None:
    properties = wire(a_machine())["properties"]
    assert properties["type"] == "VirtualMachineScaleSets"
    assert properties["vmSize"] == "Standard_NC12s_v3"
    assert properties["osType"] == "Linux"
    assert properties["osSKU"] == "Ubuntu"
    assert properties["count"] == 1
    assert properties["mode"] == "User"
    assert properties["osDiskSizeGB"] == 120
    assert properties["nodeTaints"] == ["sku=gpu:NoSchedule"]


def test_node_labels_are_the_machine_labels_plus_provisioner_name_and_machine_type() -> None:
    labels = wire(a_machine())["properties"]["nodeLabels"]
    assert labels == {
        "karpenter.sh/provisioner-name": "default",
        "kaito.sh/workspace": "workspace-falcon-7b",
        "kaito.sh/workspacenamespace": "default",
        "apps": "falcon-7b",
        "kaito.sh/machine-type": "gpu",
    }


def test_a_cpu_size_is_labelled_cpu() -> None:
    machine = a_machine()
    machine["spec"]["requirements"][0]["values"] = ["Standard_D4s_v3", "Standard_D8s_v3"]
    properties = wire(machine)["properties"]
    assert properties["vmSize"] == "Standard_D4s_v3"  # the first value, as gpu-provisioner does
    assert properties["nodeLabels"]["kaito.sh/machine-type"] == "cpu"


def test_tags_mark_the_pool_as_ours_with_azure_safe_names() -> None:
    machine = a_machine()
    machine["metadata"]["uid"] = "0b5f3c1e-uid"
    tags = wire(machine)["properties"]["tags"]
    assert tags == {
        "kaito-py-cluster": "kaito-cluster",
        "kaito-py-machine": "ws1a2b3c4d5",
        "kaito-py-machine-uid": "0b5f3c1e-uid",
        "kaito-py-created-at": "2024-05-01T12:00:00Z",
    }
    assert not any(set(tag) & set("<>%&\\?/") for tag in tags)
    assert agentpool.is_ours(tags, "kaito-cluster")
    assert not agentpool.is_ours(tags, "another-cluster")
    assert agentpool.created_at(tags) == NOW


def test_only_a_pool_tagged_for_this_cluster_and_this_machine_belongs_to_it() -> None:
    ours = {"kaito-py-cluster": "c1", "kaito-py-machine": "gpu1"}
    assert agentpool.belongs_to(ours, cluster_name="c1", machine_name="gpu1")
    assert not agentpool.belongs_to(ours, cluster_name="c1", machine_name="gpu2")
    assert not agentpool.belongs_to(ours, cluster_name="c2", machine_name="gpu1")
    assert not agentpool.belongs_to({}, cluster_name="c1", machine_name="gpu1")  # the user's nodepool1
    assert not agentpool.belongs_to({"kaito-py-machine": "gpu1"}, cluster_name="c1", machine_name="gpu1")
    with_uid = {**ours, "kaito-py-machine-uid": "u1"}
    assert not agentpool.made_for_another_machine(with_uid, "u1")
    assert agentpool.made_for_another_machine(with_uid, "u2")
    assert not agentpool.made_for_another_machine(ours, "u2")  # made before the UID tag existed


@pytest.mark.parametrize(
    ("family", "os_sku"),
    [("azurelinux", "AzureLinux"), ("AzureLinux", "AzureLinux"), ("ubuntu", "Ubuntu"), ("", "Ubuntu")],
)
def test_the_node_image_family_annotation_picks_the_os_sku(family: str, os_sku: str) -> None:
    machine = a_machine(metadata__annotations={"kaito.sh/node-image-family": family})
    assert wire(machine)["properties"]["osSKU"] == os_sku


def test_taints_without_a_value_render_as_key_equals_empty() -> None:
    machine = a_machine(spec__taints=[{"key": "dedicated", "effect": "NoExecute"}])
    assert wire(machine)["properties"]["nodeTaints"] == ["dedicated=:NoExecute"]


def test_no_storage_request_means_the_aks_default_disk() -> None:
    machine = a_machine(spec__resources={})
    assert wire(machine)["properties"]["osDiskSizeGB"] == 0


@pytest.mark.parametrize("name", ["a", "ws1a2b3c4d5", "abcdefghijkl", "gpu0"])
def test_valid_pool_names(name: str) -> None:
    assert agentpool.pool_name_problem(name) is None


@pytest.mark.parametrize("name", ["", "abcdefghijklm", "1abc", "ws-1", "Ws1", "ws_1", "ws.1"])
def test_invalid_pool_names_are_refused_before_any_azure_call(name: str) -> None:
    assert agentpool.pool_name_problem(name) is not None
    with pytest.raises(InvalidParameters, match="cannot be an AKS agent pool name"):
        agentpool.instance_spec(a_machine(name), cluster_name="c", now=NOW)


def test_a_machine_without_instance_type_is_invalid() -> None:
    machine = a_machine(spec__requirements=[])
    with pytest.raises(InvalidParameters, match="no requirement for instance type"):
        agentpool.instance_spec(machine, cluster_name="c", now=NOW)


def test_an_unreadable_storage_size_is_invalid() -> None:
    machine = a_machine(spec__resources={"requests": {"storage": "lots"}})
    with pytest.raises(InvalidParameters, match="storage"):
        agentpool.instance_spec(machine, cluster_name="c", now=NOW)


def test_the_fingerprint_ignores_the_creation_time_but_not_the_request() -> None:
    machine = a_machine()
    first = agentpool.instance_spec(machine, cluster_name="c", now=NOW)
    later = agentpool.instance_spec(machine, cluster_name="c", now=NOW.replace(hour=13))
    assert agentpool.fingerprint(first) == agentpool.fingerprint(later)
    machine["spec"]["requirements"][0]["values"] = ["Standard_NC24ads_A100_v4"]
    changed = agentpool.instance_spec(machine, cluster_name="c", now=NOW)
    assert agentpool.fingerprint(changed) != agentpool.fingerprint(first)


def test_only_machines_of_kaito_workspaces_or_ragengines_are_provisioned() -> None:
    assert agentpool.is_kaito_machine(a_machine())
    assert agentpool.is_kaito_machine({"metadata": {"labels": {"kaito.sh/ragengine": "rag"}}})
    assert not agentpool.is_kaito_machine({"metadata": {"labels": {"karpenter.sh/provisioner-name": "default"}}})
