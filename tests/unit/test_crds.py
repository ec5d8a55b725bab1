"""The CRDs are generated from the pydantic models; the committed copies must match them."""

from __future__ import annotations

from typing import Any

import yaml

from kaito_operator.api import crds
from kaito_operator.api.workspace import Workspace


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += _walk(sub, f"{path}.{name}")
    if "items" in schema:
        nodes += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += _walk(schema["additionalProperties"], f"{path}{{}}")
    return nodes


def test_committed_crds_match_the_models() -> None:
    for name, crd in crds.all_crds().items():
        committed = (crds.crd_dir() / name).read_text()
        assert committed == crds.render(crd), f"{name} is stale: run `kaito crds --write`"


def test_schemas_are_structural() -> None:
    for crd in crds.all_crds().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert ("$ref" not in node and "title" not in node and "anyOf" not in node) or node.get(
                "x-kubernetes-int-or-string"
            ), path
            has_type = "type" in node or node.get("x-kubernetes-int-or-string")
            assert has_type or node.get("x-kubernetes-preserve-unknown-fields"), f"untyped node at {path}"
            assert not ("properties" in node and "additionalProperties" in node), path


def test_every_workspace_field_is_described() -> None:
    schema = crds.workspace_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    undescribed = [path for path, node in _walk(schema) if path and path != ".metadata" and not node.get("description")]
    # Items of lists and values of maps take their meaning from the described list or map.
    undescribed = [p for p in undescribed if not p.endswith(("[]", "{}"))]
    assert undescribed == []


def test_workspace_crd_shape_is_kaito_compatible() -> None:
    crd = crds.workspace_crd()
    spec = crd["spec"]
    assert spec["names"]["shortNames"] == ["wk", "wks"]
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    # Kaito v0.1's default columns, unchanged; ours only under `kubectl get -o wide` (priority 1).
    assert [c["name"] for c in columns if not c.get("priority")] == [
        "Instance",
        "ResourceReady",
        "InferenceReady",
        "WorkspaceReady",
        "Age",
    ]
    assert [(c["name"], c["jsonPath"]) for c in columns if c.get("priority") == 1] == [("Phase", ".status.phase")]
    props = version["schema"]["openAPIV3Schema"]["properties"]
    assert "spec" not in props and {"resource", "inference", "status"} <= set(props)
    assert props["resource"]["properties"]["count"]["default"] == 1
    assert props["resource"]["properties"]["instanceType"]["default"] == "Standard_NC12s_v3"


def test_machine_crd_is_cluster_scoped_with_status() -> None:
    spec = crds.machine_crd()["spec"]
    assert spec["group"] == "karpenter.sh" and spec["scope"] == "Cluster"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha5" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert set(columns) == {"Type", "Zone", "Node", "Ready", "Age", "Capacity", "Provisioner", "Template"}
    assert columns["Capacity"]["priority"] == 1


def test_workspace_model_round_trips_an_example() -> None:
    with open(crds.crd_dir().parents[2] / "examples" / "kaito_workspace_llama2_70b.yaml") as handle:
        raw = yaml.safe_load(handle)
    workspace = Workspace.model_validate(raw)
    assert workspace.resource.count == 2
    assert workspace.inference.preset is not None and workspace.inference.preset.access_mode == "private"
    wire = workspace.to_wire()
    assert wire["resource"]["instanceType"] == "Standard_NC96ads_A100_v4"
    assert wire["inference"]["preset"]["presetOptions"]["imagePullSecrets"] == ["<IMAGE PULL SECRETS>"]
