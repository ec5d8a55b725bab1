"""The inference workload of a Workspace: a Deployment, rendered by pure functions.

Why a Deployment (see docs/workspace-controller.md): every replica is a complete TGI server on one
node (TGI shards only across the GPUs of one machine), replicas are interchangeable and keep no
state, and a Deployment rolls out template changes by itself. ``maxSurge: 0`` because there is
exactly one node per replica (anti-affinity), so a surge pod could never be placed.

Presets run TGI (``text-generation-launcher``) with flags in a fixed order; the annotation
``kaito.sh/runtime: transformers`` runs the project's own runtime from the same image instead. A
template workspace runs the user's pod template with our label, node affinity, anti-affinity and
tolerations merged in. A hash of the rendered pod template is an annotation on it, so a change in
how the operator renders presets rolls the pods; a hash of the whole manifest on the Deployment
tells the controller whether it needs to apply at all.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.api.workspace import Workspace
from kaito_operator.presets import catalog
from kaito_operator.presets.catalog import Preset
from kaito_operator.presets.serving import TgiSettings, tgi_settings
from kaito_operator.runtime.kinds import DEPLOYMENT
from kaito_operator.workspace.names import workload_name
from kaito_operator.workspace.selectors import node_requirements

RENDER_VERSION: Final = "1"
"""Bump to roll every preset workload even when the rendered template happens not to change."""
TEMPLATE_HASH_ANNOTATION: Final = "kaito.sh/template-hash"
RENDERED_HASH_ANNOTATION: Final = "kaito.sh/rendered-hash"
RUNTIME_TRANSFORMERS: Final = "transformers"
CONTAINER_PORT: Final = 5000
HEALTH_PATH: Final = "/health"
PROBE_PERIOD_SECONDS: Final = 10
SHM_VOLUME: Final = "dshm"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
TERMINATION_GRACE_SECONDS: Final = 120
API_KEY_ENV: Final = "KAITO_API_KEY"
"""The container variable holding the API key; the command refers to it as ``$(KAITO_API_KEY)``,
which the kubelet expands, so the key never appears in the pod spec."""

RuntimeCommand = Callable[[str, int, int, int], list[str]]
"""(model_dir, port, max_input_tokens, max_total_tokens) -> the container command."""


@dataclass(frozen=True)
class RenderOptions:
    registry: str = catalog.DEFAULT_REGISTRY
    """Registry of the public preset images."""
    runtime_command: RuntimeCommand | None = None
    """Builds the command of the project's transformers runtime (``kaito.sh/runtime: transformers``).
    The composition root injects model_images' command; the Workspace controller does not import
    another package's internals."""


# --- shared pieces -------------------------------------------------------------------------------
def owner_reference(workspace: Workspace) -> dict[str, Any]:
    return {
        "apiVersion": WORKSPACE.api_version,
        "kind": WORKSPACE.kind,
        "name": workspace.metadata["name"],
        "uid": workspace.metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def selector_labels(workspace: Workspace) -> dict[str, str]:
    return {c.LABEL_WORKSPACE: workspace.metadata["name"]}


def gpu_tolerations() -> list[dict[str, Any]]:
    """Tolerate the taint provisioned GPU nodes carry (sku=gpu) and the common ``gpu`` taint."""
    return [
        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
        {"key": "gpu", "operator": "Equal", "effect": "NoSchedule"},
    ]


def node_affinity_requirements(workspace: Workspace) -> list[dict[str, Any]]:
    """The labelSelector plus the instance type, as required node-affinity expressions."""
    return [
        *node_requirements(workspace.resource.label_selector),
        {"key": c.LABEL_INSTANCE_TYPE, "operator": "In", "values": [workspace.resource.instance_type]},
    ]


def one_replica_per_node(workspace: Workspace) -> dict[str, Any]:
    return {
        "labelSelector": {"matchLabels": selector_labels(workspace)},
        "topologyKey": HOSTNAME_LABEL,
    }


def content_hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


# --- presets -------------------------------------------------------------------------------------
def num_shard(preset: Preset, instance_type: str) -> int:
    """GPUs the TGI server shards over on one node (see ``presets.serving``)."""
    return tgi_settings(preset, instance_type).num_shard


def tgi_command(settings: TgiSettings) -> list[str]:
    """``text-generation-launcher`` with its flags in a fixed order; dtype, shards and token limits
    follow the VM size's GPUs (``presets.serving``)."""
    return [
        "text-generation-launcher",
        "--model-id",
        catalog.WEIGHTS_PATH,
        "--num-shard",
        str(settings.num_shard),
        "--port",
        str(CONTAINER_PORT),
        # Kubernetes sets HOSTNAME to the pod name and TGI reads that variable as --hostname.
        "--hostname",
        "0.0.0.0",
        "--max-input-tokens",
        str(settings.max_input_tokens),
        "--max-total-tokens",
        str(settings.max_total_tokens),
        "--dtype",
        settings.dtype,
        "--usage-stats",
        "off",
    ]


def _probe(failure_threshold: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": CONTAINER_PORT},
        "periodSeconds": PROBE_PERIOD_SECONDS,
        "failureThreshold": failure_threshold,
    }


def api_key_secret(workspace: Workspace) -> str | None:
    """The Secret named by ``kaito.sh/api-key-secret``, if any."""
    name = (workspace.metadata.get("annotations") or {}).get(c.ANNOTATION_API_KEY_SECRET)
    if not isinstance(name, str) or not name.strip():
        return None
    return name.strip()


def _protect(container: dict[str, Any], secret: str) -> None:
    """Both servers take ``--api-key`` (TGI's launcher flag; the runtime's own) and then require
    ``Authorization: Bearer <key>`` on every route but health and metrics."""
    container["command"] = [*container["command"], "--api-key", f"$({API_KEY_ENV})"]
    reference = {"secretKeyRef": {"name": secret, "key": c.API_KEY_SECRET_KEY}}
    container["env"] = [*(container.get("env") or []), {"name": API_KEY_ENV, "valueFrom": reference}]


def preset_image(workspace: Workspace, preset: Preset, options: RenderOptions) -> str:
    spec = workspace.inference.preset
    if spec is not None and spec.access_mode == "private" and spec.preset_options and spec.preset_options.image:
        return spec.preset_options.image
    return preset.image(options.registry)


def preset_pod_spec(workspace: Workspace, options: RenderOptions) -> dict[str, Any]:
    spec = workspace.inference.preset
    if spec is None:
        raise ValueError(f"workspace {workspace.metadata['name']} has no inference.preset to render a pod from")
    preset = catalog.get(spec.name)
    runtime = (workspace.metadata.get("annotations") or {}).get(c.ANNOTATION_RUNTIME)
    container: dict[str, Any] = {
        "name": workload_name(workspace.metadata["name"]),
        "image": preset_image(workspace, preset, options),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "readinessProbe": _probe(3),
        "startupProbe": _probe(math.ceil(preset.startup_seconds / PROBE_PERIOD_SECONDS)),
        "livenessProbe": _probe(3),
    }
    volumes: list[dict[str, Any]] = []
    if runtime == RUNTIME_TRANSFORMERS:
        if options.runtime_command is None:
            raise ValueError(
                f"annotation {c.ANNOTATION_RUNTIME}: {RUNTIME_TRANSFORMERS} is not available in this operator "
                "(it was built without the runtime's container command); remove the annotation to run TGI"
            )
        container["command"] = options.runtime_command(
            catalog.WEIGHTS_PATH, CONTAINER_PORT, preset.max_input_tokens, preset.max_total_tokens
        )
    else:
        settings = tgi_settings(preset, workspace.resource.instance_type)
        shards = settings.num_shard
        container["command"] = tgi_command(settings)
        container["env"] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]  # the weights are in the image
        gpus = {c.GPU_RESOURCE: str(shards)}
        container["resources"] = {"requests": dict(gpus), "limits": dict(gpus)}
        if shards > 1:
            # NCCL exchanges tensors between the shards through shared memory.
            volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
            container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    secret = api_key_secret(workspace)
    if secret is not None:
        _protect(container, secret)
    pod: dict[str, Any] = {
        # Both servers drain in-flight requests for up to 90 s on SIGTERM.
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "containers": [container],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": node_affinity_requirements(workspace)}]
                }
            },
            "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [one_replica_per_node(workspace)]},
        },
        "tolerations": gpu_tolerations(),
    }
    if volumes:
        pod["volumes"] = volumes
    if spec.access_mode == "private" and spec.preset_options and spec.preset_options.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.preset_options.image_pull_secrets]
    return pod


# --- templates -----------------------------------------------------------------------------------
def merge_into_user_template(workspace: Workspace) -> dict[str, Any]:
    """The user's pod template with our label, node affinity, anti-affinity and tolerations added.

    Node-affinity terms are ORed by Kubernetes, so our requirements are ANDed into every term the
    user wrote (or form the only term). Nothing of the user's is removed.
    """
    template = copy.deepcopy(workspace.inference.template or {})
    metadata = template.setdefault("metadata", {}) or {}
    template["metadata"] = metadata
    metadata["labels"] = {**(metadata.get("labels") or {}), **selector_labels(workspace)}
    spec = template.setdefault("spec", {})
    affinity = spec.setdefault("affinity", {})

    required = affinity.setdefault("nodeAffinity", {}).setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
    terms = required.get("nodeSelectorTerms") or [{}]
    ours = node_affinity_requirements(workspace)
    for term in terms:
        expressions = term.setdefault("matchExpressions", [])
        expressions.extend(r for r in ours if r not in expressions)
    required["nodeSelectorTerms"] = terms

    anti = affinity.setdefault("podAntiAffinity", {}).setdefault("requiredDuringSchedulingIgnoredDuringExecution", [])
    if one_replica_per_node(workspace) not in anti:
        anti.append(one_replica_per_node(workspace))

    tolerations = spec.setdefault("tolerations", [])
    tolerations.extend(t for t in gpu_tolerations() if t not in tolerations)
    return template


# --- the workload --------------------------------------------------------------------------------
def pod_template(workspace: Workspace, options: RenderOptions) -> dict[str, Any]:
    if workspace.inference.template is not None:
        template = merge_into_user_template(workspace)
    else:
        template = {"metadata": {"labels": selector_labels(workspace)}, "spec": preset_pod_spec(workspace, options)}
    annotations = dict(template["metadata"].get("annotations") or {})
    annotations.pop(TEMPLATE_HASH_ANNOTATION, None)
    template["metadata"]["annotations"] = annotations
    annotations[TEMPLATE_HASH_ANNOTATION] = content_hash([RENDER_VERSION, template])
    return template


def render_workload(workspace: Workspace, options: RenderOptions) -> dict[str, Any]:
    name = workspace.metadata["name"]
    deployment: dict[str, Any] = {
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": {
            "name": workload_name(name),
            "namespace": workspace.metadata["namespace"],
            "labels": selector_labels(workspace),
            "ownerReferences": [owner_reference(workspace)],
        },
        "spec": {
            "replicas": workspace.resource.count,
            "selector": {"matchLabels": selector_labels(workspace)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": pod_template(workspace, options),
        },
    }
    return stamp_rendered_hash(deployment)


def stamp_rendered_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Record a hash of the manifest on it, so an unchanged object is never applied again."""
    meta = obj["metadata"]
    meta["annotations"] = {k: v for k, v in (meta.get("annotations") or {}).items() if k != RENDERED_HASH_ANNOTATION}
    meta["annotations"][RENDERED_HASH_ANNOTATION] = content_hash(obj)
    return obj


def rendered_hash(obj: dict[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(RENDERED_HASH_ANNOTATION)
    return str(value) if value is not None else None
