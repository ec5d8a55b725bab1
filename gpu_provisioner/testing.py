"""Test helpers for the GPU provisioner that users of the project may want too: a Kaito-shaped
Machine builder, fast provisioner settings, and ``FakeCloud``, a stateful in-memory cloud provider
(call record, "next error" knobs) for fast tests of the Machine controller's steps. An operator
running only the provisioner against the AKS simulator is ``kaito.testing.provisioner_operator``;
the general helpers (waits, conditions) are in ``kaito_operator.testing``.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from gpu_provisioner.cloudprovider import Instance, InstanceSpec, Operation, OperationKind, OperationProgress
from gpu_provisioner.errors import CloudError, NotFound, OperationInProgress, UnreadableOperation
from gpu_provisioner.settings import ProvisionerSettings


def a_machine(
    name: str,
    *,
    namespace_label: str,
    instance_type: str = "Standard_NC12s_v3",
    storage: str = "120Gi",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Machine as Kaito v0.1's workspace controller makes it (kaito-compat.md §8)."""
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "labels": {
                "karpenter.sh/provisioner-name": "default",
                "kaito.sh/workspace": "workspace-falcon-7b",
                "kaito.sh/workspacenamespace": namespace_label,
                "apps": "falcon-7b",
            },
            "annotations": annotations or {},
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]},
                {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
                {"key": "kaito.sh/machine-type", "operator": "In", "values": ["gpu"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": storage}},
        },
    }


def fast_provisioner(selector: str, **overrides: Any) -> ProvisionerSettings:
    values: dict[str, Any] = {
        "poll_interval_s": 0.2,
        "arm_polling_interval_s": 0.05,
        "request_timeout_s": 10,
        "transient_retry_s": 0.2,
        "auth_retry_interval_s": 2,
        "gc_interval_s": 1,
        "gc_grace_period_s": 1,
        "machine_selector": selector,
    }
    values.update(overrides)
    return ProvisionerSettings(**values)


@dataclass(frozen=True)
class CloudCall:
    """One call a ``FakeCloud`` received."""

    method: str
    name: str


@dataclass
class _Running:
    operation: Operation
    polls_left: int
    failure: CloudError | None = None


@dataclass
class FakeCloud:
    """A :class:`~gpu_provisioner.cloudprovider.CloudProvider` that keeps its instances in memory.

    Creates and deletes finish after ``polls_to_finish`` polls. Knobs: ``fail_next(method, error)``
    makes the next call of ``method`` ("create", "delete", "get", "list", "poll") raise ``error``;
    ``fail_operation(name, error)`` ends the running operation of ``name`` with ``error``. Every call
    is recorded in ``calls``.
    """

    polls_to_finish: int = 1
    instances: dict[str, Instance] = field(default_factory=dict)
    calls: list[CloudCall] = field(default_factory=list)
    _errors: dict[str, deque[CloudError]] = field(default_factory=dict)
    _running: dict[str, _Running] = field(default_factory=dict)
    _tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # --- knobs ------------------------------------------------------------------------------------
    def fail_next(self, method: str, error: CloudError) -> None:
        self._errors.setdefault(method, deque()).append(error)

    def fail_operation(self, name: str, error: CloudError) -> None:
        self._running[name].failure = error

    def calls_of(self, method: str, name: str | None = None) -> list[CloudCall]:
        return [call for call in self.calls if call.method == method and (name is None or call.name == name)]

    def _enter(self, method: str, name: str) -> None:
        self.calls.append(CloudCall(method, name))
        queued = self._errors.get(method)
        if queued:
            raise queued.popleft()

    # --- the protocol -----------------------------------------------------------------------------
    async def create(self, spec: InstanceSpec) -> Operation:
        self._enter("create", spec.name)
        if spec.name in self._running:
            raise OperationInProgress(f"an operation on {spec.name} is in progress")
        self.instances[spec.name] = Instance(
            name=spec.name,
            vm_size=spec.vm_size,
            provisioning_state="Creating",
            labels=dict(spec.labels),
            tags=dict(spec.tags),
        )
        return self._start("create", spec.name)

    async def delete(self, name: str) -> Operation:
        self._enter("delete", name)
        if name not in self.instances:
            raise NotFound(f"Agent Pool not found: {name}", code="NotFound")
        self.instances[name] = replace(self.instances[name], provisioning_state="Deleting")
        return self._start("delete", name)

    async def poll(self, operation: Operation) -> OperationProgress:
        self._enter("poll", operation.name)
        running = self._running.get(operation.name)
        if running is None or running.operation.token != operation.token:
            if operation.token.startswith("fake-"):
                if operation.kind == "delete" and operation.name not in self.instances:
                    return OperationProgress(done=True)
                instance = self.instances.get(operation.name)
                if instance is None:
                    raise NotFound(f"Agent Pool not found: {operation.name}", code="NotFound")
                return OperationProgress(done=True, instance=instance)
            raise UnreadableOperation(f"not a token of this fake: {operation.token!r}")
        if running.failure is not None:
            del self._running[operation.name]
            if operation.name in self.instances:
                self.instances[operation.name] = replace(self.instances[operation.name], provisioning_state="Failed")
            raise running.failure
        running.polls_left -= 1
        if running.polls_left > 0:
            return OperationProgress(done=False, retry_after=1)
        del self._running[operation.name]
        if operation.kind == "delete":
            self.instances.pop(operation.name, None)
            return OperationProgress(done=True)
        instance = replace(self.instances[operation.name], provisioning_state="Succeeded")
        self.instances[operation.name] = instance
        return OperationProgress(done=True, instance=instance)

    async def get(self, name: str) -> Instance:
        self._enter("get", name)
        if name not in self.instances:
            raise NotFound(f"Agent Pool not found: {name}", code="NotFound")
        return self.instances[name]

    async def list(self) -> list[Instance]:
        self._enter("list", "")
        return list(self.instances.values())

    def _start(self, kind: OperationKind, name: str) -> Operation:
        operation = Operation(kind=kind, name=name, token=f"fake-{next(self._tokens)}")
        self._running[name] = _Running(operation, self.polls_to_finish)
        return operation
