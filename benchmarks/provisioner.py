"""How long the GPU provisioner takes to turn N Machines into Ready nodes and back, against the AKS
simulator on a real control plane, and how many Azure requests that costs.

Run: .venv/bin/python benchmarks/provisioner.py [--machines 10] [--delay 2]

The simulator's provisioning delay is the floor; what the benchmark shows is the overhead above it
(watch latency, polling pace, status writes) and the request bill per Machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
import uuid
from pathlib import Path

from gpu_provisioner.testing import a_machine, fast_provisioner
from kaito.testing import provisioner_operator
from kaito_operator.api.crds import all_crds
from kaito_operator.api.kinds import MACHINE
from kaito_operator.testing import has_condition, plain_client, wait_for
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.binaries import ensure_binaries
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds


async def run(machines: int, delay: float, state: Path) -> None:
    plane = ControlPlane(state / "plane", profile="full", binaries=ensure_binaries())
    await asyncio.to_thread(plane.start)
    try:
        async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
            await install_crds(api, all_crds().values())
            kube = plain_client(api)
            label = f"bench-{uuid.uuid4().hex[:6]}"
            config = SimulatorConfig(
                kubeconfig=plane.kubeconfig, provisioning_delay_s=delay, deletion_delay_s=delay / 4
            )
            async with (
                AksSimulator(config) as simulator,
                provisioner_operator(
                    api, simulator, state / "token", fast_provisioner(f"kaito.sh/workspacenamespace={label}")
                ),
            ):
                names = [f"b{uuid.uuid4().hex[:8]}" for _ in range(machines)]
                started = time.monotonic()
                await asyncio.gather(*(kube.create(MACHINE, a_machine(n, namespace_label=label)) for n in names))
                await asyncio.gather(
                    *(wait_for(kube, MACHINE, n, has_condition("Ready", "True"), timeout=300) for n in names)
                )
                ready = time.monotonic() - started
                started = time.monotonic()
                await asyncio.gather(*(kube.delete(MACHINE, n) for n in names))
                await asyncio.gather(*(wait_for(kube, MACHINE, n, lambda o: o is None, timeout=300) for n in names))
                gone = time.monotonic() - started
                bill = collections.Counter(r.target for r in simulator.requests)
    finally:
        await asyncio.to_thread(plane.stop)
    print(f"machines={machines} provisioning_delay={delay}s")
    print(f"all Ready after   {ready:6.2f}s  (overhead above the delay: {ready - delay:5.2f}s)")
    print(f"all deleted after {gone:6.2f}s")
    print("Azure requests:  " + ", ".join(f"{target}={count}" for target, count in sorted(bill.items())))
    print(f"per Machine:     {sum(bill.values()) / machines:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machines", type=int, default=10)
    parser.add_argument("--delay", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-provisioner-") as state:
        asyncio.run(run(args.machines, args.delay, Path(state)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
