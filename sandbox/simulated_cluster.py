"""A whole simulated AKS cluster for drills and benchmarks: the full control plane with the CRDs, one
namespace for the Workspaces, and the AKS + Entra ID simulator registering its nodes there, plus the
environment a ``kaito run`` child process needs to use them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from kaito_operator.api.crds import all_crds
from kaito_operator.runtime import NAMESPACE, KubeClient, RealClock, RuntimeMetrics
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds


@dataclass
class SimulatedCluster:
    plane: ControlPlane
    kube: KubeClient
    """An unthrottled client for the drill's own reads and writes."""
    simulator: AksSimulator
    operator_environment: dict[str, str]
    """KUBECONFIG and the Azure/workload-identity variables of a ``kaito run`` against the simulator."""


@contextlib.asynccontextmanager
async def simulated_cluster(
    state: Path, *, namespace: str, provisioning_delay_s: float, deletion_delay_s: float = 1.0
) -> AsyncIterator[SimulatedCluster]:
    """Start it all under ``state``; everything is stopped on leaving, also after a failure."""
    plane = ControlPlane(state / "plane", profile="full")
    await asyncio.to_thread(plane.start)
    try:
        async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
            await install_crds(api, all_crds().values())
            kube = KubeClient(api, clock=RealClock(), metrics=RuntimeMetrics(), qps=0, burst=1)
            await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            config = SimulatorConfig(
                kubeconfig=plane.kubeconfig,
                provisioning_delay_s=provisioning_delay_s,
                deletion_delay_s=deletion_delay_s,
            )
            async with AksSimulator(config) as simulator:
                environment = {
                    **simulator.operator_environment(simulator.write_federated_token(state / "token")),
                    "KUBECONFIG": str(plane.kubeconfig),
                }
                yield SimulatedCluster(plane, kube, simulator, environment)
    finally:
        await asyncio.to_thread(plane.stop)
