"""A control-plane component can be restarted in place (chaos drills): same port, same data, a new
process; a component without a known probe, or an unknown name, is refused by name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kaito_operator.runtime import NAMESPACE, NODE
from kaito_operator.testing import plain_client
from sandbox.aks_simulator.nodes import NodeRegistrar, node_manifest
from sandbox.controlplane import ControlPlane, ControlPlaneError
from sandbox.kube import api_client_from_kubeconfig

pytestmark = [pytest.mark.controlplane]


async def namespace_exists(plane: ControlPlane, name: str) -> bool:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        items, _ = await plain_client(api).list(NAMESPACE)
        return name in {item["metadata"]["name"] for item in items}


async def create_namespace(plane: ControlPlane, name: str) -> None:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await plain_client(api).create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def test_the_apiserver_restarts_on_its_port_and_keeps_the_data(tmp_path: Path) -> None:
    with ControlPlane(tmp_path / "cp", profile="apiserver") as plane:
        asyncio.run(create_namespace(plane, "kept"))
        before = next(p for p in plane.processes if p.name == "kube-apiserver")
        server = plane.server

        plane.restart("kube-apiserver")

        after = next(p for p in plane.processes if p.name == "kube-apiserver")
        assert after.pid != before.pid and before.process is not None and before.process.poll() is not None
        assert plane.server == server
        assert [p.name for p in plane.processes] == ["etcd", "kube-apiserver"], "stop order kept"
        assert asyncio.run(namespace_exists(plane, "kept")), "etcd kept what was written before"
        with pytest.raises(ControlPlaneError, match="no component named 'kwok'"):
            plane.restart("kwok")


async def test_a_simulated_node_joins_once_the_apiserver_is_back(tmp_path: Path) -> None:
    # A VM's kubelet keeps trying to register while the API server restarts; so does the simulator.
    with ControlPlane(tmp_path / "cp", profile="apiserver") as plane:
        registrar = NodeRegistrar(plane.kubeconfig)
        await registrar.start()
        try:
            apiserver = next(p for p in plane.processes if p.name == "kube-apiserver")
            assert apiserver.process is not None
            apiserver.process.kill()
            apiserver.process.wait(timeout=10)
            manifest = node_manifest(
                node_name="aks-pool1-12345678-vmss000000",
                provider_id="azure:///subscriptions/s/resourceGroups/mc/providers/Microsoft.Compute/"
                "virtualMachineScaleSets/aks-pool1-12345678-vmss/virtualMachines/0",
                pool="pool1",
                properties={"vmSize": "Standard_NC12s_v3", "count": 1, "mode": "User", "osDiskSizeGB": 128},
                location="eastus",
                node_resource_group="mc",
            )
            registering = asyncio.create_task(registrar.register(manifest))
            await asyncio.to_thread(plane.restart, "kube-apiserver")
            async with asyncio.timeout(60):
                await registering
            async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
                node = await plain_client(api).get(NODE, "aks-pool1-12345678-vmss000000")
            assert node["metadata"]["labels"]["kubernetes.azure.com/agentpool"] == "pool1"
        finally:
            await registrar.close()
