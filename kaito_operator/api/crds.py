"""CustomResourceDefinitions generated from the pydantic models, so the Python types and the API
server's schema cannot drift apart. ``kaito crds`` prints them; ``kaito crds --write`` writes
helm/kaito/crds/.

Pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 subset: no ``$ref``, no
``null`` types, no ``title``, every node typed. ``structural()`` does that translation.

The Workspace CRD carries structure only: no CEL rules. Kaito's rules, immutability included, are
the validating webhook's (kaito_operator/workspace/validation.py), which compares values by meaning;
CEL's ``self == oldSelf`` compared serialisations and refused updates that changed nothing
(``presetOptions: {}`` added by a client that writes empty structs).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kaito_operator.api import constants as c
from kaito_operator.api.machine import Machine
from kaito_operator.api.workspace import Workspace

_DROP_KEYS = {"title", "$defs"}


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a structural OpenAPI v3 schema for a CRD version."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.get("$defs", {})
    result: dict[str, Any] = _convert(schema, defs)
    return result


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").rsplit("/", 1)[-1]])
        target.update(node)  # field-level description/extras win over the model's
        return _convert(target, defs)
    any_of = node.get("anyOf")
    if any_of is not None:
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1 and len(non_null) != len(any_of):
            # Optional[X]: Kubernetes has no null type; an absent field is the "none" value.
            node.pop("anyOf")
            merged = dict(non_null[0])
            merged.update(node)
            return _convert(merged, defs)
        if node.get("x-kubernetes-int-or-string"):
            return {k: _convert(v, defs) for k, v in node.items() if k not in _DROP_KEYS}
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = dict(node.pop("allOf")[0])
        merged.update(node)
        return _convert(merged, defs)
    if node.get("default", 0) is None:
        node.pop("default")
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "properties" in node:
        node.pop("additionalProperties", None)  # extra="allow" in Python; the API server prunes
        node.setdefault("type", "object")
    elif node.get("type") == "object" and node.get("additionalProperties") is True:
        node.pop("additionalProperties")
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            node["x-kubernetes-preserve-unknown-fields"] = True
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _convert(value, defs)
    return out


def _workspace_shape(schema: dict[str, Any]) -> dict[str, Any]:
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props.pop("apiVersion", None)
    props.pop("kind", None)
    props["apiVersion"] = {"type": "string", "description": "kaito.sh/v1alpha1"}
    props["kind"] = {"type": "string", "description": "Workspace"}
    return schema


def _condition_column(name: str) -> dict[str, Any]:
    return {"name": name, "type": "string", "jsonPath": f'.status.conditions[?(@.type=="{name}")].status'}


def workspace_crd() -> dict[str, Any]:
    schema = _workspace_shape(structural(Workspace))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{c.WORKSPACE_PLURAL}.{c.KAITO_GROUP}"},
        "spec": {
            "group": c.KAITO_GROUP,
            "names": {
                "kind": c.WORKSPACE_KIND,
                "listKind": "WorkspaceList",
                "plural": c.WORKSPACE_PLURAL,
                "singular": "workspace",
                "shortNames": ["wk", "wks"],
                "categories": ["workspace"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": c.KAITO_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Instance", "type": "string", "jsonPath": ".resource.instanceType"},
                        _condition_column(c.COND_RESOURCE_READY),
                        _condition_column(c.COND_INFERENCE_READY),
                        _condition_column(c.COND_WORKSPACE_READY),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        # Ours, after Kaito v0.1's columns: shown by `kubectl get -o wide`.
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def machine_crd() -> dict[str, Any]:
    schema = structural(Machine)
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    props["apiVersion"] = {"type": "string", "description": "karpenter.sh/v1alpha5"}
    props["kind"] = {"type": "string", "description": "Machine"}
    schema.pop("required", None)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{c.MACHINE_PLURAL}.{c.KARPENTER_GROUP}"},
        "spec": {
            "group": c.KARPENTER_GROUP,
            "names": {
                "kind": c.MACHINE_KIND,
                "listKind": "MachineList",
                "plural": c.MACHINE_PLURAL,
                "singular": "machine",
                "categories": ["karpenter"],
            },
            "scope": "Cluster",
            "versions": [
                {
                    "name": c.KARPENTER_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Type",
                            "type": "string",
                            "jsonPath": ".metadata.labels.node\\.kubernetes\\.io/instance-type",
                        },
                        {
                            "name": "Zone",
                            "type": "string",
                            "jsonPath": ".metadata.labels.karpenter\\.k8s\\.azure/zone",
                        },
                        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
                        _condition_column(c.COND_READY),
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Capacity",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": ".metadata.labels.karpenter\\.sh/capacity-type",
                        },
                        {
                            "name": "Provisioner",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": ".metadata.labels.karpenter\\.sh/provisioner-name",
                        },
                        {
                            "name": "Template",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": ".spec.machineTemplateRef.name",
                        },
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name → CRD, in the order they should be applied."""
    return {
        "kaito.sh_workspaces.yaml": workspace_crd(),
        "karpenter.sh_machines.yaml": machine_crd(),
    }


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `kaito crds --write` from kaito_operator/api; do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=120)


def crd_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "helm" / "kaito" / "crds"


def write_all(directory: Path | None = None) -> list[Path]:
    target = directory or crd_dir()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, crd in all_crds().items():
        path = target / name
        path.write_text(render(crd))
        written.append(path)
    return written
