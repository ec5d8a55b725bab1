"""The Workspace type (kaito.sh/v1alpha1), with Kaito v0.1's top-level layout: no ``spec``.

``resource``, ``inference`` and ``status`` sit directly on the object. The field descriptions here
are what ``kubectl explain workspace`` prints, and the CRD in helm/kaito/crds is generated from
these models (``kaito crds --write``), so this module is the single source of truth.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from kaito_operator.api.common import Condition, KubeModel, LabelSelector

PRESET_NAMES: Final = (
    "falcon-7b",
    "falcon-7b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
    "llama-2-7b",
    "llama-2-7b-chat",
    "llama-2-13b",
    "llama-2-13b-chat",
    "llama-2-70b",
    "llama-2-70b-chat",
    "llama-3.1-8b-instruct",
    "llama-3.2-3b-instruct",
    "llama-3.3-70b-instruct",
    "mistral-7b-instruct-v0.3",
    "phi-3.5-mini-instruct",
    "phi-4",
    "qwen2.5-7b-instruct",
    "qwen2.5-coder-7b-instruct",
)
PresetName = Literal[
    "falcon-7b",
    "falcon-7b-instruct",
    "falcon-40b",
    "falcon-40b-instruct",
    "llama-2-7b",
    "llama-2-7b-chat",
    "llama-2-13b",
    "llama-2-13b-chat",
    "llama-2-70b",
    "llama-2-70b-chat",
    "llama-3.1-8b-instruct",
    "llama-3.2-3b-instruct",
    "llama-3.3-70b-instruct",
    "mistral-7b-instruct-v0.3",
    "phi-3.5-mini-instruct",
    "phi-4",
    "qwen2.5-7b-instruct",
    "qwen2.5-coder-7b-instruct",
]

DEFAULT_INSTANCE_TYPE: Final = "Standard_NC12s_v3"

# status.phase, in the order a Workspace goes through them (docs/workspace-controller.md, "Phase").
PHASE_WAITING_FOR_AGENT_POOL: Final = "WaitingForAgentPool"
PHASE_NODE_JOINING: Final = "NodeJoining"
PHASE_SCHEDULING: Final = "Scheduling"
PHASE_PULLING_IMAGE: Final = "PullingImage"
PHASE_LOADING_MODEL: Final = "LoadingModel"
PHASE_SERVING: Final = "Serving"
PHASE_FAILED: Final = "Failed"
PHASE_DELETING: Final = "Deleting"
PHASES: Final = (
    PHASE_WAITING_FOR_AGENT_POOL,
    PHASE_NODE_JOINING,
    PHASE_SCHEDULING,
    PHASE_PULLING_IMAGE,
    PHASE_LOADING_MODEL,
    PHASE_SERVING,
)
"""The phases of a Workspace on its way to serving, in order; Failed and Deleting can follow any."""


class ResourceSpec(KubeModel):
    """Which GPU nodes the workspace runs on, and how many."""

    count: int = Field(
        default=1,
        ge=1,
        description="Number of GPU nodes. Missing nodes are provisioned as Machines. Immutable.",
    )
    instance_type: str = Field(
        default=DEFAULT_INSTANCE_TYPE,
        description="Azure VM size of the GPU nodes, e.g. Standard_NC12s_v3. Immutable.",
    )
    label_selector: LabelSelector = Field(
        description=(
            "Labels that the workspace's nodes must carry. Existing Ready nodes that match and have "
            "the instance type are used first; provisioned nodes get the matchLabels. Immutable."
        ),
    )
    preferred_nodes: list[str] | None = Field(
        default=None,
        description=(
            "Node names to use first, when they match the labelSelector and instanceType; others are ignored."
        ),
    )


class PresetOptions(KubeModel):
    image: str | None = Field(
        default=None,
        description="Model image to run when accessMode is private (required then), e.g. myacr.azurecr.io/llama:1.",
    )
    image_pull_secrets: list[str] | None = Field(
        default=None,
        description="Names of image pull secrets in the workspace's namespace, used with a private image.",
    )


class PresetSpec(KubeModel):
    # A plain string, not an enum: the webhook answers an unknown name with Kaito's message.
    name: str = Field(
        description=f"The preset model to serve, one of {', '.join(PRESET_NAMES)} (case-insensitive). Immutable."
    )
    access_mode: Literal["public", "private", ""] = Field(
        default="public",
        description=(
            "public: the project's published image for the preset. private: the image in "
            "presetOptions.image (for gated models such as llama-2 that users build themselves). "
            "An empty value means public."
        ),
    )
    preset_options: PresetOptions | None = Field(
        default=None, description="Image settings, used when accessMode is private."
    )


class InferenceSpec(KubeModel):
    """What to serve: exactly one of a preset model or a custom pod template."""

    preset: PresetSpec | None = Field(
        default=None, description="A preset model served by TGI. Exclusive with template. Immutable."
    )
    template: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A custom PodTemplateSpec to run instead of a preset. The operator adds its label, "
            "node affinity and GPU tolerations. Exclusive with preset; cannot be added or removed."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )


class WorkspaceStatus(KubeModel):
    worker_nodes: list[str] | None = Field(
        default=None, description="Names of the nodes the workspace's workload runs on."
    )
    conditions: list[Condition] | None = Field(
        default=None,
        description=(
            "MachineReady, ResourceReady, InferenceReady, WorkspaceReady and WorkspaceDeleting, "
            "with reasons and messages."
        ),
    )
    phase: str | None = Field(
        default=None,
        description=(
            "Where the workspace is: WaitingForAgentPool, NodeJoining, Scheduling, PullingImage, "
            "LoadingModel, Serving (in that order), or Failed (see the conditions' messages) or Deleting."
        ),
    )
    nodes_expected_ready_time: str | None = Field(
        default=None,
        description=(
            "While nodes are provisioned: when they should be Ready (RFC 3339), from the median time "
            "this operator has seen Machines of the instance type take. Absent when unknown."
        ),
        json_schema_extra={"format": "date-time"},
    )


class Workspace(KubeModel):
    """A preset LLM (or a custom pod) served on GPU nodes that the operator finds or provisions."""

    api_version: str | None = Field(default=None, description="kaito.sh/v1alpha1")
    kind: str | None = Field(default=None, description="Workspace")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    resource: ResourceSpec = Field(description="The GPU nodes: instance type, count and label selector.")
    inference: InferenceSpec = Field(description="What to serve: a preset model or a custom pod template.")
    status: WorkspaceStatus | None = Field(default=None, description="Observed state, written by the operator.")
