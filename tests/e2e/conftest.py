"""Fixtures of the end-to-end suite: the full control plane (tests/conftest.py), one AKS simulator
per test registering its nodes there, and a rig bundling both with the test's namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import KubeClient
from kaito_operator.testing import force_delete, force_delete_machines, plain_client
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.controlplane import ControlPlane
from tests.e2e.e2e_kit import EndToEnd


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
        await force_delete(kube, WORKSPACE, workspace["metadata"]["name"], namespace)
    await force_delete_machines(kube, namespace)
