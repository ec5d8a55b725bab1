"""Registers and removes the Kubernetes Node of a simulated agent pool, shaped as AKS shapes it.

AKS names a pool's VM scale set ``aks-<pool>-<8 digits>-vmss``, its first node
``aks-<pool>-<8 digits>-vmss000000``, and labels the node with the pool; kwok keeps nodes that carry
the ``kwok.x-k8s.io/node: fake`` annotation Ready, and keeps the capacity sent at create time.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException

from sandbox.aks_simulator.sizes import shape

log = logging.getLogger(__name__)
_REQUEST_TIMEOUT_S = 10
_T = TypeVar("_T")
_PODS_PER_NODE = 110
# What AKS holds back from a node for the OS and kubelet, roughly; allocatable = capacity - this.
_RESERVED_CPU_MILLIS = 180
_RESERVED_MEMORY_MIB = 1750


def _taint(rendered: str) -> dict[str, str]:
    key_value, _, effect = rendered.rpartition(":")
    key, _, value = key_value.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def node_manifest(
    *,
    node_name: str,
    provider_id: str,
    pool: str,
    properties: dict[str, Any],
    location: str,
    node_resource_group: str,
) -> dict[str, Any]:
    """The Node AKS would register for the first VM of a one-node pool."""
    vm_size = str(properties["vmSize"])
    node_shape = shape(vm_size)
    labels: dict[str, str] = {
        "agentpool": pool,
        "kubernetes.azure.com/agentpool": pool,
        "kubernetes.azure.com/cluster": node_resource_group,
        "kubernetes.azure.com/mode": str(properties.get("mode", "User")).lower(),
        "kubernetes.azure.com/os-sku": str(properties.get("osSKU", "Ubuntu")),
        "kubernetes.azure.com/role": "agent",
        "node.kubernetes.io/instance-type": vm_size,
        "beta.kubernetes.io/instance-type": vm_size,
        "topology.kubernetes.io/region": location,
        "topology.kubernetes.io/zone": "0",  # AKS's zone label for a pool without availability zones
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node_name,
        "type": "kwok",
    }
    if node_shape.gpus:
        labels["accelerator"] = "nvidia"
    labels.update({str(k): str(v) for k, v in (properties.get("nodeLabels") or {}).items()})
    disk_gib = int(properties.get("osDiskSizeGB") or 128)
    capacity = {
        "cpu": str(node_shape.vcpus),
        "memory": f"{node_shape.memory_gib}Gi",
        "pods": str(_PODS_PER_NODE),
        "ephemeral-storage": f"{disk_gib}Gi",
    }
    allocatable = {
        "cpu": f"{node_shape.vcpus * 1000 - _RESERVED_CPU_MILLIS}m",
        "memory": f"{node_shape.memory_gib * 1024 - _RESERVED_MEMORY_MIB}Mi",
        "pods": str(_PODS_PER_NODE),
        "ephemeral-storage": f"{disk_gib * 9 // 10}Gi",
    }
    if node_shape.gpus:
        capacity["nvidia.com/gpu"] = allocatable["nvidia.com/gpu"] = str(node_shape.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "providerID": provider_id,
            "taints": [_taint(t) for t in properties.get("nodeTaints") or []],
        },
        "status": {"capacity": capacity, "allocatable": allocatable, "phase": "Running"},
    }


class NodeRegistrar:
    """Creates and deletes simulated Nodes through a real API server."""

    def __init__(self, kubeconfig: Path, *, retry_for_s: float = 120.0) -> None:
        self._kubeconfig = kubeconfig
        self._api: client.ApiClient | None = None
        self._retry_for_s = retry_for_s

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """A joining VM's kubelet keeps trying while the API server is away (restarting, 5xx, 429)."""
        deadline = time.monotonic() + self._retry_for_s
        delay = 0.2
        while True:
            try:
                return await call()
            except (aiohttp.ClientError, OSError, TimeoutError, ApiException) as error:
                refused = isinstance(error, ApiException) and not (error.status == 429 or error.status >= 500)
                if refused or time.monotonic() > deadline:
                    raise
                log.info("simulator: the API server is not answering (%s); trying again in %.1fs", error, delay)
                await asyncio.sleep(delay)  # the kubelet's retry pace
                delay = min(delay * 2, 5.0)

    async def start(self) -> None:
        configuration = client.Configuration()
        await config.load_kube_config(config_file=str(self._kubeconfig), client_configuration=configuration)
        self._api = client.ApiClient(configuration)

    async def close(self) -> None:
        if self._api is not None:
            await self._api.close()
            self._api = None

    @property
    def _core(self) -> client.CoreV1Api:
        if self._api is None:
            raise RuntimeError("NodeRegistrar.start() was not called")
        return client.CoreV1Api(self._api)

    async def register(self, manifest: dict[str, Any]) -> None:
        body: Any = manifest  # the client serialises plain dicts as they are; no need for V1Node
        try:
            await self._retrying(lambda: self._core.create_node(body, _request_timeout=_REQUEST_TIMEOUT_S))
        except ApiException as error:
            if error.status != 409:  # already there: a re-created pool kept its old node name
                raise

    async def _delete_node(self, name: str) -> None:
        await self._core.delete_node(name, _request_timeout=_REQUEST_TIMEOUT_S)

    async def remove_pool_nodes(self, pool: str) -> list[str]:
        """Delete every node of ``pool`` (finalizers are left to their owners, as in AKS)."""
        nodes = await self._retrying(
            lambda: self._core.list_node(
                label_selector=f"kubernetes.azure.com/agentpool={pool}", _request_timeout=_REQUEST_TIMEOUT_S
            )
        )
        deleted: list[str] = []
        for node in nodes.items:
            try:
                await self._retrying(functools.partial(self._delete_node, node.metadata.name))
                deleted.append(node.metadata.name)
            except ApiException as error:
                if error.status != 404:
                    raise
        return deleted
