"""Base model and the small Kubernetes core types (label selector, taint, condition) the CRDs reuse.

Every API model inherits ``KubeModel``: camelCase on the wire, snake_case in Python, unknown keys kept
(objects read from the API server carry fields this version may not know; dropping them on a round
trip would lose data).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class KubeModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready dict the API server expects (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LabelSelectorRequirement(KubeModel):
    key: str = Field(description="The label key that the selector applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] | None = Field(
        default=None,
        description="Values for In and NotIn (must be non-empty); empty for Exists and DoesNotExist.",
    )


class LabelSelector(KubeModel):
    match_labels: dict[str, str] | None = Field(
        default=None,
        description="Label key/value pairs that a node must carry, all of them (ANDed).",
    )
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None,
        description="Label selector requirements, all of which must hold (ANDed).",
    )


class NodeSelectorRequirement(KubeModel):
    key: str = Field(description="The label key the requirement applies to.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="How the key relates to the values: In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[str] | None = Field(default=None, description="The values the operator compares against.")


class Taint(KubeModel):
    key: str = Field(description="The taint key to be applied to a node.")
    value: str | None = Field(default=None, description="The taint value corresponding to the taint key.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = Field(
        description="What happens to pods that do not tolerate the taint: NoSchedule, PreferNoSchedule or NoExecute."
    )
    time_added: str | None = Field(
        default=None, description="When the taint was added (RFC 3339); only for NoExecute taints."
    )


class Condition(KubeModel):
    """metav1.Condition: one aspect of the object's state."""

    type: str = Field(description="Type of condition in CamelCase, e.g. ResourceReady.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: str | None = Field(
        default=None, description="When the condition last changed status (RFC 3339)."
    )
    reason: str | None = Field(default=None, description="A machine-readable CamelCase reason for the status.")
    message: str | None = Field(default=None, description="A human-readable message with details.")
