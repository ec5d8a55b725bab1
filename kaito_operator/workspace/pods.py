"""What a Workspace's inference pods say about its progress. Pure functions only.

A pod goes through the steps a Workspace's phase names: waiting for the scheduler, starting its
containers (pulling the image, the bulk of that time for a model image), running but not yet
ready (the runtime is loading the weights), ready (serving). ``pod_stage`` reads that step from a
pod's status the way the kubelet writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any


class PodStage(IntEnum):
    """A pod's step, in the order a pod takes them (so the slowest replica is the ``min``)."""

    SCHEDULING = 0
    STARTING = 1
    """Scheduled; its containers are not running yet (image pull, ContainerCreating)."""
    LOADING = 2
    """A container runs but the pod is not Ready: the runtime is loading the model."""
    READY = 3


@dataclass(frozen=True)
class PodState:
    name: str
    stage: PodStage
    waiting_reason: str | None = None
    """The first waiting container's reason (ContainerCreating, ErrImagePull, CrashLoopBackOff…)."""


def _condition(pod: dict[str, Any], kind: str) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def pod_state(pod: dict[str, Any]) -> PodState:
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    name = str(meta.get("name") or "")
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    waiting = next(
        (str(s["state"]["waiting"].get("reason") or "") for s in statuses if (s.get("state") or {}).get("waiting")),
        None,
    )
    if _condition(pod, "Ready") == "True":
        return PodState(name, PodStage.READY)
    scheduled = _condition(pod, "PodScheduled") == "True" or bool((pod.get("spec") or {}).get("nodeName"))
    if not scheduled:
        return PodState(name, PodStage.SCHEDULING)
    running = any((s.get("state") or {}).get("running") for s in status.get("containerStatuses") or [])
    if waiting == "CrashLoopBackOff" or (running and waiting is None):
        # A crash loop is a runtime that started and died while loading: not an image problem.
        return PodState(name, PodStage.LOADING, waiting)
    return PodState(name, PodStage.STARTING, waiting)


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))
