"""The Deployment a Workspace runs: TGI for presets, the project runtime on request, user templates merged."""

from __future__ import annotations

from typing import Any

import pytest

from kaito_operator.presets.catalog import get
from kaito_operator.presets.serving import TgiSettings
from kaito_operator.workspace import workload
from kaito_operator.workspace.workload import (
    RENDERED_HASH_ANNOTATION,
    TEMPLATE_HASH_ANNOTATION,
    RenderOptions,
    render_workload,
    rendered_hash,
    tgi_command,
)
from tests.unit.workspace.workspace_builders import UID, workspace

OPTIONS = RenderOptions(registry="myacr.azurecr.io/kaito")
OWNER = {
    "apiVersion": "kaito.sh/v1alpha1",
    "kind": "Workspace",
    "name": "ws1",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}
AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "apps", "operator": "In", "values": ["falcon-7b"]},
                        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["Standard_NC12s_v3"]},
                    ]
                }
            ]
        }
    },
    "podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"kaito.sh/workspace": "ws1"}}, "topologyKey": "kubernetes.io/hostname"}
        ]
    },
}
TOLERATIONS = [
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
    {"key": "gpu", "operator": "Equal", "effect": "NoSchedule"},
]


def _without_hashes(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["annotations"].pop(RENDERED_HASH_ANNOTATION)
    obj["spec"]["template"]["metadata"]["annotations"].pop(TEMPLATE_HASH_ANNOTATION)
    return obj


def _probe(threshold: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": 5000}, "periodSeconds": 10, "failureThreshold": threshold}


def test_falcon_7b_deployment() -> None:
    rendered = render_workload(workspace(count=2), OPTIONS)
    assert _without_hashes(rendered) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "ws1",
            "namespace": "team",
            "labels": {"kaito.sh/workspace": "ws1"},
            "ownerReferences": [OWNER],
            "annotations": {},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"kaito.sh/workspace": "ws1"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"kaito.sh/workspace": "ws1"}, "annotations": {}},
                "spec": {
                    "terminationGracePeriodSeconds": 120,
                    "containers": [
                        {
                            "name": "ws1",
                            "image": "myacr.azurecr.io/kaito/kaito-falcon-7b:0.1.0",
                            "ports": [{"name": "http", "containerPort": 5000, "protocol": "TCP"}],
                            "readinessProbe": _probe(3),
                            "startupProbe": _probe(30),
                            "livenessProbe": _probe(3),
                            "command": [
                                "text-generation-launcher",
                                "--model-id",
                                "/workspace/weights",
                                "--num-shard",
                                "1",
                                "--port",
                                "5000",
                                "--hostname",
                                "0.0.0.0",
                                "--max-input-tokens",
                                "1024",
                                "--max-total-tokens",
                                "2048",
                                "--dtype",
                                "float16",  # Standard_NC12s_v3 has V100s, which have no bfloat16
                                "--usage-stats",
                                "off",
                            ],
                            "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
                            "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                    "affinity": AFFINITY,
                    "tolerations": TOLERATIONS,
                },
            },
        },
    }


def test_sharded_preset_gets_all_gpus_of_the_node_and_shared_memory() -> None:
    rendered = render_workload(workspace(preset="llama-2-13b", instance_type="Standard_NC24s_v3"), OPTIONS)
    pod = rendered["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][container["command"].index("--num-shard") + 1] == "4"
    assert container["command"][container["command"].index("--dtype") + 1] == "float16"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert container["startupProbe"]["failureThreshold"] == 30


def test_num_shard_is_capped_by_the_preset() -> None:
    assert workload.num_shard(get("falcon-7b"), "Standard_NC24s_v3") == 1
    assert workload.num_shard(get("falcon-40b"), "Standard_NC24s_v3") == 4
    assert workload.num_shard(get("llama-2-70b"), "Standard_NC999_unknown") == 8, "unknown SKU: the preset's need"
    assert workload.num_shard(get("llama-2-70b"), "Standard_ND96asr_v4") == 8


def test_startup_probe_is_sized_from_the_preset() -> None:
    rendered = render_workload(workspace(preset="llama-2-70b", instance_type="Standard_ND96asr_v4"), OPTIONS)
    [container] = rendered["spec"]["template"]["spec"]["containers"]
    assert container["startupProbe"]["failureThreshold"] * 10 >= get("llama-2-70b").startup_seconds


def test_private_access_uses_the_users_image_and_pull_secrets() -> None:
    ws = workspace(
        preset="llama-2-7b-chat",
        preset_extra={
            "accessMode": "private",
            "presetOptions": {"image": "myacr.azurecr.io/llama-2-7b-chat:1", "imagePullSecrets": ["acr", "acr2"]},
        },
    )
    pod = render_workload(ws, OPTIONS)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "myacr.azurecr.io/llama-2-7b-chat:1"
    assert pod["imagePullSecrets"] == [{"name": "acr"}, {"name": "acr2"}]
    public = render_workload(workspace(preset="llama-2-7b-chat"), OPTIONS)["spec"]["template"]["spec"]
    assert "imagePullSecrets" not in public


def test_transformers_runtime_uses_the_project_runtime_without_gpus() -> None:
    calls: list[tuple[str, int, int, int]] = []

    def command(model_dir: str, port: int, max_input: int, max_total: int) -> list[str]:
        calls.append((model_dir, port, max_input, max_total))
        return ["python", "-m", "model_images.runtime", model_dir]

    options = RenderOptions(registry="r", runtime_command=command)
    ws = workspace(annotations={"kaito.sh/runtime": "transformers"})
    [container] = render_workload(ws, options)["spec"]["template"]["spec"]["containers"]
    assert calls == [("/workspace/weights", 5000, 1024, 2048)]
    assert container["command"] == ["python", "-m", "model_images.runtime", "/workspace/weights"]
    assert "resources" not in container
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"


def test_the_transformers_runtime_without_an_injected_command_is_refused_by_name() -> None:
    ws = workspace(annotations={"kaito.sh/runtime": "transformers"})
    with pytest.raises(ValueError, match=r"kaito\.sh/runtime"):
        render_workload(ws, RenderOptions())


def test_flags_come_in_a_fixed_order() -> None:
    settings = TgiSettings(dtype="bfloat16", num_shard=2, max_input_tokens=1024, max_total_tokens=2048)
    first = tgi_command(settings)
    assert first == tgi_command(settings)
    flags = [part for part in first if part.startswith("--")]
    assert flags == [
        "--model-id", "--num-shard", "--port", "--hostname", "--max-input-tokens", "--max-total-tokens",
        "--dtype", "--usage-stats",
    ]  # fmt: skip


def test_template_workspace_keeps_the_users_pod_and_merges_ours_in() -> None:
    user_term: dict[str, Any] = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    other_term: dict[str, Any] = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
    user_toleration = {"key": "team", "operator": "Exists"}
    template: dict[str, Any] = {
        "metadata": {"labels": {"app": "mine"}, "annotations": {"note": "x"}},
        "spec": {
            "containers": [{"name": "web", "image": "nginx"}],
            "tolerations": [user_toleration, TOLERATIONS[0]],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [user_term, other_term]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": user_term}],
                },
                "podAffinity": {"x": 1},
            },
        },
    }
    ws = workspace(template=template, count=3)
    rendered = render_workload(ws, OPTIONS)
    assert rendered["spec"]["replicas"] == 3
    pod = rendered["spec"]["template"]
    assert pod["metadata"]["labels"] == {"app": "mine", "kaito.sh/workspace": "ws1"}
    assert pod["metadata"]["annotations"]["note"] == "x"
    spec = pod["spec"]
    assert spec["containers"] == [{"name": "web", "image": "nginx"}]
    assert spec["tolerations"] == [user_toleration, TOLERATIONS[0], TOLERATIONS[1]], "no duplicates"
    ours = AFFINITY["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [user_term["matchExpressions"][0], *ours]
    assert terms[1]["matchFields"] == other_term["matchFields"]
    assert terms[1]["matchExpressions"] == ours, "ANDed into every term the user wrote"
    assert spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spec["affinity"]["podAffinity"] == {"x": 1}
    assert spec["affinity"]["podAntiAffinity"] == AFFINITY["podAntiAffinity"]
    assert template["spec"]["tolerations"] == [user_toleration, TOLERATIONS[0]], "the input is not mutated"


def test_template_without_affinity_gets_ours() -> None:
    ws = workspace(template={"spec": {"containers": [{"name": "web", "image": "nginx"}]}})
    spec = render_workload(ws, OPTIONS)["spec"]["template"]["spec"]
    assert spec["affinity"] == AFFINITY
    assert spec["tolerations"] == TOLERATIONS


def test_hashes_are_stable_and_follow_the_rendering() -> None:
    first = render_workload(workspace(), OPTIONS)
    assert rendered_hash(first) == rendered_hash(render_workload(workspace(), OPTIONS))
    moved = render_workload(workspace(), RenderOptions(registry="other.io"))
    assert rendered_hash(moved) != rendered_hash(first)
    template_hash = first["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION]
    assert moved["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION] != template_hash
    scaled = render_workload(workspace(count=2), OPTIONS)
    assert scaled["spec"]["template"] == first["spec"]["template"], "scaling does not roll pods"
    assert rendered_hash(scaled) != rendered_hash(first)
    assert rendered_hash(None) is None


def test_render_version_rolls_every_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    before = render_workload(workspace(), OPTIONS)["spec"]["template"]["metadata"]["annotations"]
    monkeypatch.setattr(workload, "RENDER_VERSION", "2")
    after = render_workload(workspace(), OPTIONS)["spec"]["template"]["metadata"]["annotations"]
    assert before[TEMPLATE_HASH_ANNOTATION] != after[TEMPLATE_HASH_ANNOTATION]


def test_the_composition_root_injects_the_project_runtime_command() -> None:
    from kaito.operator import render_options
    from kaito.settings import Settings

    ws = workspace(annotations={"kaito.sh/runtime": "transformers"})
    [container] = render_workload(ws, render_options(Settings()))["spec"]["template"]["spec"]["containers"]
    # The model images install the runtime in its own virtualenv (model_images/images/Dockerfile.template).
    assert container["command"][0] == "/opt/kaito-runtime/bin/python"
    assert "/workspace/weights" in container["command"]


# --- the API key -------------------------------------------------------------------------------------
def test_an_api_key_secret_reaches_tgi_through_the_environment() -> None:
    ws = workspace(annotations={"kaito.sh/api-key-secret": "llm-key"})
    [container] = render_workload(ws, OPTIONS)["spec"]["template"]["spec"]["containers"]
    # TGI's launcher flag; $(VAR) is expanded by the kubelet, so the key itself is not in the pod spec.
    assert container["command"][-2:] == ["--api-key", "$(KAITO_API_KEY)"]
    assert {"name": "KAITO_API_KEY", "valueFrom": {"secretKeyRef": {"name": "llm-key", "key": "api-key"}}} in (
        container["env"]
    )
    open_ws = render_workload(workspace(), OPTIONS)["spec"]["template"]["spec"]["containers"][0]
    assert "--api-key" not in open_ws["command"]


def test_the_transformers_runtime_takes_the_same_key() -> None:
    import argparse

    from model_images.cli import add_runtime_commands
    from model_images.runtime.command import runtime_container_command

    options = RenderOptions(registry="r", runtime_command=runtime_container_command)
    ws = workspace(annotations={"kaito.sh/runtime": "transformers", "kaito.sh/api-key-secret": "llm-key"})
    [container] = render_workload(ws, options)["spec"]["template"]["spec"]["containers"]
    parser = argparse.ArgumentParser()
    add_runtime_commands(parser.add_subparsers(dest="cmd", required=True), lambda module, function: lambda args: 0)
    args = parser.parse_args(container["command"][3:])
    assert args.api_key == "$(KAITO_API_KEY)"  # what the kubelet replaces with the Secret's value
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "llm-key"


def test_a_load_balancer_without_a_key_is_flagged() -> None:
    from kaito_operator.workspace.service import unprotected_public_endpoint

    assert unprotected_public_endpoint(workspace(annotations={"kaito.sh/enablelb": "True"}))
    assert not unprotected_public_endpoint(
        workspace(annotations={"kaito.sh/enablelb": "True", "kaito.sh/api-key-secret": "k"})
    )
    assert not unprotected_public_endpoint(workspace())  # ClusterIP: reachable only inside the cluster
