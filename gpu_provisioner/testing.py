"""Test helpers for the GPU provisioner that users of the project may want too: a Kaito-shaped
Machine builder, fast provisioner settings, and an operator running only the provisioner against
the AKS simulator. The general ones (waits, conditions, the operator in the caller's event loop)
are in ``kaito_operator.testing``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from gpu_provisioner.setup import ProvisionerFactory
from kaito_operator.testing import running_operator
from sandbox.aks_simulator import AksSimulator


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


@contextlib.asynccontextmanager
async def provisioner_operator(
    api: Any, simulator: AksSimulator, token_file: Path, settings: ProvisionerSettings, **azure: Any
) -> AsyncIterator[ProvisionerFactory]:
    """An operator running only the GPU provisioner, talking to ``simulator``."""
    environment = simulator.operator_environment(simulator.write_federated_token(token_file))
    factory = ProvisionerFactory(azure=AzureSettings(**{**environment, **azure}), settings=settings)
    async with running_operator(api, [factory]):
        yield factory
