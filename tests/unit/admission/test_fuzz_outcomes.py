"""The admission fuzz's judges: what counts as a Workspace's outcome, and which Machines are wrong."""

from __future__ import annotations

from typing import Any

from kaito.admission_fuzz import FuzzReport, machines_that_cannot_fit, terminal
from kaito_operator.api import constants as c


def _with(*conditions: tuple[str, str, str, str]) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [
                {"type": kind, "status": status, "reason": reason, "message": message}
                for kind, status, reason, message in conditions
            ]
        }
    }


def test_a_retried_write_failure_is_no_outcome_but_a_refused_spec_is() -> None:
    retrying = _with(
        (c.COND_RESOURCE_READY, "False", "workspaceResourceStatusFailed", "creating machines: 409 Conflict"),
        (c.COND_INFERENCE_READY, "False", "WorkspaceInferenceStatusFailed", "applying service: timed out"),
    )
    assert terminal(retrying) is None
    refused = _with(
        (c.COND_RESOURCE_READY, "False", "workspaceResourceStatusFailed", "resource.count: must be at most 10"),
    )
    assert terminal(refused) == f"failed:{c.COND_RESOURCE_READY}:workspaceResourceStatusFailed"
    assert terminal(_with((c.COND_WORKSPACE_READY, "True", "workspaceReady", "workspace is ready"))) == "ready"


class OneMachine:
    """Lists one Machine, made for the Workspace ``owner``."""

    def __init__(self, owner: str) -> None:
        self.owner = owner

    async def list(self, kind: Any, namespace: Any = None, **_: Any) -> tuple[list[dict[str, Any]], str]:
        machine = {"metadata": {"name": "ws-m0", "labels": {c.LABEL_WORKSPACE: self.owner}}}
        return [machine], "1"


def _accepted(instance_type: str) -> FuzzReport:
    workspace = {
        "metadata": {"name": "ws", "namespace": "ns"},
        "resource": {"count": 1, "instanceType": instance_type},
        "inference": {"preset": {"name": "falcon-7b"}},
    }
    return FuzzReport(accepted=[workspace])


async def test_a_machine_with_enough_gpus_but_too_little_gpu_memory_is_wrong() -> None:
    # Standard_NC6: one GPU (half a Tesla K80) with 12 GiB, per Azure's size documentation; falcon-7b's
    # weights alone are 7B parameters x 2 bytes = 14 GB.
    wrong = await machines_that_cannot_fit(OneMachine("ws"), "ns", _accepted("Standard_NC6"))  # type: ignore[arg-type]
    assert wrong == ["ws-m0 for ws (total GPU memory)"]
    # Standard_NC12s_v3: two V100s of 16 GiB each: room for it.
    assert await machines_that_cannot_fit(OneMachine("ws"), "ns", _accepted("Standard_NC12s_v3")) == []  # type: ignore[arg-type]
