"""The generated CRDs on a real kube-apiserver: Kaito v0.1 manifests apply unchanged, bad input is
refused by the schema with a message naming the field, updates that change nothing meaningful pass, and a
gpu-provisioner-shaped Machine is accepted. Kaito's rules themselves are the webhook's (tests/integration/admission)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from kaito_operator.api import constants as c
from sandbox.controlplane import ControlPlane
from sandbox.kube import REQUEST_TIMEOUT, apply_objects, load_manifests

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _workspace(name: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }
    body.update(overrides)
    return body


async def _create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await client.CustomObjectsApi(api).create_namespaced_custom_object(
        c.KAITO_GROUP, c.KAITO_VERSION, namespace, c.WORKSPACE_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
    )
    return result


def _status_message(error: ApiException) -> str:
    """The apiserver's Status message of a refused request."""
    assert error.body is not None, f"HTTP {error.status} came without a Status body"
    message: str = json.loads(error.body)["message"]
    return message


async def _rejection(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as raised:
        await _create(api, namespace, body)
    assert raised.value.status == 422, raised.value.body
    return _status_message(raised.value)


KAITO_V01_EXAMPLES = frozenset(
    f"kaito_workspace_{name}.yaml"
    for name in (
        "falcon_7b", "falcon_7b-instruct", "falcon_40b", "falcon_40b-instruct", "llama2_7b", "llama2_7b-chat",
        "llama2_13b", "llama2_13b-chat", "llama2_70b", "llama2_70b-chat",
    )
)  # fmt: skip
"""Kaito v0.1's ten example files (examples/ in kaito-project/kaito at v0.1.0), kept under their names."""


async def test_all_ten_kaito_examples_apply_unchanged(kube_api: client.ApiClient, namespace: str) -> None:
    files = sorted(EXAMPLES.glob("kaito_workspace_*.yaml"))
    assert {path.name for path in files} >= KAITO_V01_EXAMPLES
    for path in files:  # Kaito's ten and the project's newer presets alike
        [stored] = await apply_objects(kube_api, load_manifests(path), namespace=namespace)
        assert stored["metadata"]["name"].startswith("workspace-")
        assert stored["resource"]["count"] >= 1  # defaulted when the file leaves it out
        assert stored["inference"]["preset"]["accessMode"] in ("public", "private")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
async def test_kubectl_get_wks_shows_the_kaito_columns(
    kube_api: client.ApiClient, namespace: str, control_plane: ControlPlane
) -> None:
    await _create(kube_api, namespace, _workspace("columns"))
    result = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", "get", "wks", "-n", namespace],
        env={**os.environ, "KUBECONFIG": str(control_plane.kubeconfig)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    header = result.stdout.splitlines()[0].split()
    assert header == ["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]
    assert "Standard_NC12s_v3" in result.stdout


async def test_bad_structure_is_refused_by_the_schema(kube_api: client.ApiClient, namespace: str) -> None:
    body = _workspace("zero")
    body["resource"]["count"] = 0
    message = await _rejection(kube_api, namespace, body)
    assert "resource.count" in message and "greater than or equal to 1" in message
    body = _workspace("mode", inference={"preset": {"name": "falcon-7b", "accessMode": "secret"}})
    message = await _rejection(kube_api, namespace, body)
    assert "inference.preset.accessMode" in message and "private" in message


async def test_the_crd_never_refuses_an_update_that_changes_nothing_meaningful(
    kube_api: client.ApiClient, namespace: str
) -> None:
    """Kaito's rules, immutability included, are the webhook's (tests/integration/admission); the CRD has
    no CEL left that could refuse what a Go client writes when it updates metadata with a full PUT."""
    objects = client.CustomObjectsApi(kube_api)
    stored = await _create(kube_api, namespace, _workspace("empties"))
    stored["inference"]["preset"].update(presetOptions={}, accessMode="")
    stored["metadata"]["finalizers"] = ["example.com/keep"]
    updated = await objects.replace_namespaced_custom_object(
        c.KAITO_GROUP,
        c.KAITO_VERSION,
        namespace,
        c.WORKSPACE_PLURAL,
        "empties",
        stored,
        _request_timeout=REQUEST_TIMEOUT,
    )
    assert updated["inference"]["preset"]["presetOptions"] == {}
    assert updated["metadata"]["finalizers"] == ["example.com/keep"]
    updated["metadata"]["finalizers"] = []
    await objects.replace_namespaced_custom_object(
        c.KAITO_GROUP,
        c.KAITO_VERSION,
        namespace,
        c.WORKSPACE_PLURAL,
        "empties",
        updated,
        _request_timeout=REQUEST_TIMEOUT,
    )


async def test_template_workspace_keeps_the_whole_pod_template(kube_api: client.ApiClient, namespace: str) -> None:
    template = {
        "metadata": {"labels": {"app": "custom"}},
        "spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80}]}]},
    }
    stored = await _create(kube_api, namespace, _workspace("keep", inference={"template": template}))
    assert stored["inference"]["template"] == template


async def test_a_gpu_provisioner_shaped_machine_is_accepted(kube_api: client.ApiClient) -> None:
    name = f"ws{uuid.uuid4().hex[:9]}"
    machine = {
        "apiVersion": f"{c.KARPENTER_GROUP}/{c.KARPENTER_VERSION}",
        "kind": c.MACHINE_KIND,
        "metadata": {
            "name": name,
            "labels": {
                c.LABEL_PROVISIONER_NAME: "default",
                c.LABEL_WORKSPACE: "workspace-falcon-7b",
                c.LABEL_WORKSPACE_NAMESPACE: "default",
                "apps": "falcon-7b",
            },
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                {"key": c.LABEL_INSTANCE_TYPE, "operator": "In", "values": ["Standard_NC12s_v3"]},
                {"key": c.LABEL_PROVISIONER_NAME, "operator": "In", "values": ["default"]},
                {"key": c.LABEL_MACHINE_TYPE, "operator": "In", "values": ["gpu"]},
                {"key": c.LABEL_ARCH, "operator": "In", "values": ["amd64"]},
                {"key": c.LABEL_OS, "operator": "In", "values": ["linux"]},
            ],
            "resources": {"requests": {"storage": "50Gi"}},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        },
    }
    objects = client.CustomObjectsApi(kube_api)
    try:
        stored = await objects.create_cluster_custom_object(
            c.KARPENTER_GROUP,
            c.KARPENTER_VERSION,
            c.MACHINE_PLURAL,
            machine,
            _request_timeout=REQUEST_TIMEOUT,
        )
        assert stored["spec"] == machine["spec"]  # nothing pruned
        status = {
            "status": {
                "nodeName": "aks-x-1-vmss000000",
                "capacity": {"nvidia.com/gpu": "2", "cpu": "12"},
                "conditions": [{"type": "Ready", "status": "True", "severity": "Info"}],
            }
        }
        patched = await objects.patch_cluster_custom_object_status(
            c.KARPENTER_GROUP,
            c.KARPENTER_VERSION,
            c.MACHINE_PLURAL,
            name,
            status,
            # The package's stub leaves out _content_type, which the method accepts.
            _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            _request_timeout=REQUEST_TIMEOUT,
        )
        assert patched["status"]["capacity"]["nvidia.com/gpu"] == "2"
    finally:
        await objects.delete_cluster_custom_object(
            c.KARPENTER_GROUP, c.KARPENTER_VERSION, c.MACHINE_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
        )
