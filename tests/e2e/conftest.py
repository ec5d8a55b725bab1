"""Fixtures of the end-to-end suite: the full control plane (tests/conftest.py), one AKS simulator
per test registering its nodes there, and a rig bundling both with the test's namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_kit import EndToEnd

from kaito_operator.api import constants as c
from kaito_operator.runtime import MACHINE, NODE, WORKSPACE, ApiError, KubeClient, ResourceKind
from kaito_operator.testing import plain_client
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.controlplane import ControlPlane


@pytest.fixture
async def simulator(control_plane: ControlPlane) -> AsyncIterator[AksSimulator]:
    config = SimulatorConfig(kubeconfig=control_plane.kubeconfig, provisioning_delay_s=1.0, deletion_delay_s=0.3)
    async with AksSimulator(config) as sim:
        yield sim


@pytest.fixture
async def e2e(
    kube_api: Any, control_plane: ControlPlane, simulator: AksSimulator, namespace: str, tmp_path: Path
) -> AsyncIterator[EndToEnd]:
    rig = EndToEnd(
        api=kube_api,
        kube=plain_client(kube_api),
        simulator=simulator,
        namespace=namespace,
        kubeconfig=control_plane.kubeconfig,
        token_file=tmp_path / "federated-token",
    )
    yield rig
    await _leave_nothing(rig.kube, namespace)


async def _leave_nothing(kube: KubeClient, namespace: str) -> None:
    """Whatever a failed test left: strip finalizers and delete (never part of an assertion)."""
    workspaces, _ = await kube.list(WORKSPACE, namespace)
    for workspace in workspaces:
        await _force_delete(kube, WORKSPACE, workspace["metadata"]["name"], namespace)
    machines, _ = await kube.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
    for machine in machines:
        name = machine["metadata"]["name"]
        for node in (await kube.list(NODE, label_selector=f"{c.LABEL_AKS_AGENTPOOL}={name}"))[0]:
            await _force_delete(kube, NODE, node["metadata"]["name"])
        await _force_delete(kube, MACHINE, name)


async def _force_delete(kube: KubeClient, kind: ResourceKind, name: str, namespace: str | None = None) -> None:
    try:
        await kube.patch(kind, name, {"metadata": {"finalizers": None}}, namespace=namespace)
        await kube.delete(kind, name, namespace)
    except ApiError as error:
        if not error.not_found:
            raise
