"""The chaos drill at full size: 20 falcon-7b Workspaces that each need a new node, through the AKS
simulator with random injected faults (429 with Retry-After, 5xx, an agent-pool create whose
operation ends Failed, the token endpoint down), while ``kaito run`` is SIGKILLed at random moments
100 times and restarted and the API server is restarted twice. Then every Workspace must be Ready;
all are deleted, and there must be 0 leaked pools, 0 duplicate pools and 0 orphan nodes.

It prints those counts, the double actions (PUTs of a pool while its create ran) and the Azure PUTs
per Machine from the simulator's request record; exit code 1 when anything was left or doubled.
The logic is ``sandbox.chaos`` (the e2e suite runs a small seeded drill with it).

Run: .venv/bin/python benchmarks/chaos.py [--workspaces 20] [--kills 100] [--apiserver-restarts 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from kaito_operator.api.crds import all_crds
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.chaos import ChaosPlan, ChaosReport, run_drill
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds


async def run(plan: ChaosPlan, state: Path) -> ChaosReport:
    plane = ControlPlane(state / "plane", profile="full")
    await asyncio.to_thread(plane.start)
    try:
        async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
            await install_crds(api, all_crds().values())
        async with AksSimulator(SimulatorConfig(kubeconfig=plane.kubeconfig)) as simulator:
            return await run_drill(plane, simulator, state, plan)
    finally:
        await asyncio.to_thread(plane.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--apiserver-restarts", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--delay", type=float, default=3.0, help="the simulator's provisioning delay (s)")
    parser.add_argument("--keep-log", type=Path, help="copy the operator's log here")
    args = parser.parse_args()
    plan = ChaosPlan(
        workspaces=args.workspaces,
        kills=args.kills,
        apiserver_restarts=args.apiserver_restarts,
        seed=args.seed,
        provisioning_delay_s=args.delay,
    )
    with tempfile.TemporaryDirectory(prefix="kaito-bench-chaos-") as state:
        report = asyncio.run(run(plan, Path(state)))
        if args.keep_log and report.operator_log and report.operator_log.exists():
            shutil.copy(report.operator_log, args.keep_log)
    for line in report.lines():
        print(line)
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
