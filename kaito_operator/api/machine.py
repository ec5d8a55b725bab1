"""The Machine type (karpenter.sh/v1alpha5), the contract between the workspace controller and any
Karpenter-compatible provisioner. Cluster-scoped; the shape is karpenter-core v0.29's, which
gpu-provisioner's Machine era reads and writes.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from pydantic.config import JsonDict

from kaito_operator.api.common import KubeModel, NodeSelectorRequirement, Taint

_QUANTITY: JsonDict = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


class ResourceRequirements(KubeModel):
    requests: dict[str, int | str] | None = Field(
        default=None,
        description="Minimum resources the machine must offer; storage sizes the node's OS disk.",
        json_schema_extra={"additionalProperties": _QUANTITY},
    )


class MachineTemplateRef(KubeModel):
    kind: str | None = Field(default=None, description="Kind of the referent.")
    name: str = Field(description="Name of the referent.")
    api_version: str | None = Field(default=None, description="API version of the referent.")


class KubeletConfiguration(KubeModel):
    cluster_dns: list[str] | None = Field(default=None, alias="clusterDNS", description="Cluster DNS IPs.")
    container_runtime: str | None = Field(default=None, description="Container runtime to use.")
    max_pods: int | None = Field(default=None, ge=0, description="Maximum number of pods on the node.")
    pods_per_core: int | None = Field(default=None, ge=0, description="Pods per CPU core.")
    system_reserved: dict[str, str] | None = Field(default=None, description="Resources reserved for the OS.")
    kube_reserved: dict[str, str] | None = Field(default=None, description="Resources reserved for Kubernetes.")
    eviction_hard: dict[str, str] | None = Field(default=None, description="Hard eviction thresholds.")
    eviction_soft: dict[str, str] | None = Field(default=None, description="Soft eviction thresholds.")
    eviction_soft_grace_period: dict[str, str] | None = Field(
        default=None, description="Grace periods of the soft eviction thresholds."
    )
    eviction_max_pod_grace_period: int | None = Field(
        default=None, description="Maximum pod grace period on soft eviction, in seconds."
    )
    image_gc_high_threshold_percent: int | None = Field(
        default=None, ge=0, le=100, description="Disk usage percent that always triggers image GC."
    )
    image_gc_low_threshold_percent: int | None = Field(
        default=None, ge=0, le=100, description="Disk usage percent that image GC frees down to."
    )
    cpu_cfs_quota: bool | None = Field(
        default=None, alias="cpuCFSQuota", description="Enforce CPU CFS quota for containers with limits."
    )


class MachineSpec(KubeModel):
    taints: list[Taint] | None = Field(default=None, description="Taints applied to the node.")
    startup_taints: list[Taint] | None = Field(
        default=None,
        description="Taints applied at registration; initialization waits for them to be removed.",
    )
    requirements: list[NodeSelectorRequirement] | None = Field(
        default=None,
        description="Node requirements; node.kubernetes.io/instance-type picks the VM size (first value).",
    )
    resources: ResourceRequirements | None = Field(default=None, description="Resources the node must offer.")
    kubelet: KubeletConfiguration | None = Field(default=None, description="Kubelet settings (informational).")
    machine_template_ref: MachineTemplateRef | None = Field(
        default=None, description="Provider-specific template the machine was made from."
    )


class MachineCondition(KubeModel):
    """A knative-style condition, as karpenter v1alpha5 writes them (note ``severity``)."""

    type: str = Field(description="MachineLaunched, MachineRegistered, MachineInitialized or Ready.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    severity: str | None = Field(default=None, description="Error, Warning or Info (empty means Error).")
    last_transition_time: str | None = Field(default=None, description="When the status last changed.")
    reason: str | None = Field(default=None, description="A CamelCase reason for the last transition.")
    message: str | None = Field(default=None, description="A human-readable message with details.")


class MachineStatus(KubeModel):
    node_name: str | None = Field(default=None, description="Name of the node the machine became.")
    provider_id: str | None = Field(
        default=None, alias="providerID", description="Cloud provider ID of the machine's node."
    )
    capacity: dict[str, int | str] | None = Field(
        default=None,
        description="Resources of the node.",
        json_schema_extra={"additionalProperties": _QUANTITY},
    )
    allocatable: dict[str, int | str] | None = Field(
        default=None,
        description="Resources of the node available to pods.",
        json_schema_extra={"additionalProperties": _QUANTITY},
    )
    conditions: list[MachineCondition] | None = Field(default=None, description="Lifecycle conditions.")


class Machine(KubeModel):
    """A request for one node, turned into cloud capacity by a provisioner."""

    api_version: str | None = Field(default=None, description="karpenter.sh/v1alpha5")
    kind: str | None = Field(default=None, description="Machine")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: MachineSpec = Field(default_factory=MachineSpec, description="The node the machine asks for.")
    status: MachineStatus | None = Field(default=None, description="Observed state, written by the provisioner.")
