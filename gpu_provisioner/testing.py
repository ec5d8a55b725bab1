"""Test helpers for the GPU provisioner that users of the project may want too: a Kaito-shaped
Machine builder and fast provisioner settings. An operator running only the provisioner against the
AKS simulator is ``kaito.testing.provisioner_operator``; the general helpers (waits, conditions) are in
``kaito_operator.testing``.
"""

from __future__ import annotations

from typing import Any

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
