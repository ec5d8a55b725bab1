"""Helpers for the provisioner's integration tests: fast SDK settings, a spec builder, and a wait for an
operation (the general helpers are in gpu_provisioner.testing and kaito_operator.testing)."""

from __future__ import annotations

from gpu_provisioner.aks import AksCloudProvider
from gpu_provisioner.cloudprovider import InstanceSpec, Operation, OperationProgress
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.testing import eventually

FAST = ProvisionerSettings(arm_polling_interval_s=0.05, request_timeout_s=10)


def a_spec(name: str = "gpu1", vm_size: str = "Standard_NC24ads_A100_v4") -> InstanceSpec:
    return InstanceSpec(
        name=name,
        vm_size=vm_size,
        os_sku="Ubuntu",
        os_disk_size_gb=256,
        labels={"kaito.sh/workspace": "ws", "kaito.sh/machine-type": "gpu"},
        taints=("sku=gpu:NoSchedule",),
        tags={"kaito-py-cluster": "kaito-cluster", "kaito-py-machine": name},
    )


async def until_done(cloud: AksCloudProvider, operation: Operation, timeout: float = 15.0) -> OperationProgress:
    async def look() -> OperationProgress | None:
        progress = await cloud.poll(operation)
        return progress if progress.done else None

    return await eventually(look, timeout=timeout, what=f"{operation.kind} of {operation.name}")
