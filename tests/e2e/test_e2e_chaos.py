"""The chaos drill, small and seeded: Workspaces arriving and churning through the AKS simulator
with random faults, while ``kaito run`` is SIGKILLed and restarted and the API server restarted.
Every Workspace ends Ready, and after deleting them nothing is left: no pool, node or Machine, no
Workspace with two pools, no PUT of a pool while its create ran. (The full-size drill, 20
Workspaces and 100 kills, is benchmarks/chaos.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kaito_operator.api.crds import all_crds
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.chaos import ChaosPlan, run_drill
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


@pytest.fixture
async def own_plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    """A control plane of this test's own: the drill restarts its API server."""
    plane = ControlPlane(tmp_path / "plane", profile="full")
    plane.start()
    try:
        async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
            await install_crds(api, all_crds().values())
        yield plane
    finally:
        plane.stop()


async def test_kills_faults_and_an_apiserver_restart_leave_every_workspace_ready_and_nothing_behind(
    own_plane: ControlPlane, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        workspaces=4,
        kills=8,
        apiserver_restarts=1,
        seed=7,
        provisioning_delay_s=2.0,
        lifetime_s=(0.5, 3.0),
        fault_interval_s=(0.3, 1.5),
        ready_timeout_s=120,
        cleanup_timeout_s=120,
    )
    async with AksSimulator(SimulatorConfig(kubeconfig=own_plane.kubeconfig)) as simulator:
        report = await run_drill(own_plane, simulator, tmp_path, plan)
    summary = "\n".join(report.lines())
    log = report.operator_log.read_text(errors="replace")[-4000:] if report.operator_log else ""
    assert (report.kills, report.apiserver_restarts) == (8, 1), summary
    assert sum(report.faults.values()) > 0, summary
    assert report.ready_after_chaos_s is not None, f"{summary}\n{log}"
    assert not report.duplicate_pools, summary
    assert not report.double_puts, summary
    assert (report.leaked_pools, report.orphan_nodes, report.leftover_machines) == ([], [], []), f"{summary}\n{log}"
    assert report.puts_per_machine, "pools were made through the simulator"
