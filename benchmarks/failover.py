"""How long a standby `kaito run` takes to take over when the leader is SIGKILLed mid-provisioning,
and whether the two ever acted twice.

Starts its own ``full`` control plane and the AKS simulator (provisioning delay D), two ``kaito run``
processes with leader election, and W falcon-7b Workspaces that each need a new node. Once the
simulator accepted the first agent-pool PUT, the leader is SIGKILLed. It prints:
- the takeover time (kill → the standby holds the Lease) and the time until the new leader's
  first Azure request; the goal is under 20 s with the default Lease timings (15 s / 10 s / 2 s);
- double actions: PUTs of a pool sent while an earlier create of that pool was still running
  (from the simulator's request record); there must be none;
- the time until every Workspace is Ready, and the Azure requests per pool.

Run: .venv/bin/python benchmarks/failover.py [--workspaces 3] [--delay 20]
     [--lease-duration 15 --renew-deadline 10 --retry-period 2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kaito_operator.api.constants import COND_WORKSPACE_READY
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import LEASE, ApiError
from kaito_operator.testing import eventually, is_true
from sandbox.operator_process import OperatorProcess
from sandbox.simulated_cluster import simulated_cluster

NAMESPACE_NAME = "failover"
LEASE_NAME = "kaito-operator-leader"


def workspace(index: int) -> dict[str, Any]:
    """falcon-7b on a node of its own label space: no existing node fits, so it needs a new one."""
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"falcon-{index:03d}", "namespace": NAMESPACE_NAME},
        "resource": {
            "instanceType": "Standard_NC12s_v3",
            "labelSelector": {"matchLabels": {"apps": f"failover-{index}"}},
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def leader_identity(process: OperatorProcess) -> str | None:
    """The identity this process logged when it became leader (JSON logs)."""
    for line in process.log_text().splitlines():
        if '"became leader"' in line:
            identity = json.loads(line).get("identity")
            return str(identity) if identity else None
    return None


async def run(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    async with simulated_cluster(state, namespace=NAMESPACE_NAME, provisioning_delay_s=args.delay) as cluster:
        kube, simulator = cluster.kube, cluster.simulator
        environment = {
            **cluster.operator_environment,
            "KAITO_LEADER_ELECT": "true",
            "KAITO_LEADER_ELECTION_NAMESPACE": "default",
            "KAITO_LEADER_ELECTION_ID": LEASE_NAME,
            "KAITO_LEADER_ELECTION_LEASE_DURATION": str(args.lease_duration),
            "KAITO_LEADER_ELECTION_RENEW_DEADLINE": str(args.renew_deadline),
            "KAITO_LEADER_ELECTION_RETRY_PERIOD": str(args.retry_period),
            "KAITO_LOG_LEVEL": "INFO",
        }
        replicas = [OperatorProcess(environment, state / f"operator-{i}.log") for i in range(2)]
        try:
            for replica in replicas:
                replica.start()
            await asyncio.gather(*(replica.wait_ready() for replica in replicas))

            async def leader() -> OperatorProcess | None:
                return next((r for r in replicas if leader_identity(r)), None)

            first = await eventually(leader, timeout=60, what="a leader")
            standby = next(r for r in replicas if r is not first)
            started = time.monotonic()
            for index in range(args.workspaces):
                await kube.create(WORKSPACE, workspace(index))

            async def accepted_put() -> bool | None:
                return any(r.status == 201 for r in simulator.requests_for("PUT")) or None

            await eventually(accepted_put, timeout=120, what="the first accepted agent-pool PUT")
            first.kill()
            killed_mono, killed_wall = time.monotonic(), time.time()

            async def new_holder() -> str | None:
                try:
                    lease = await kube.get(LEASE, LEASE_NAME, "default")
                except ApiError:
                    return None
                holder = (lease.get("spec") or {}).get("holderIdentity")
                return holder if holder and holder == leader_identity(standby) else None

            await eventually(new_holder, timeout=120, what="the standby holding the Lease")
            takeover = time.monotonic() - killed_mono

            async def first_request_after_kill() -> float | None:
                later = [r.time for r in simulator.requests if r.target not in (None, "ADMIN") and r.time > killed_wall]
                return min(later) - killed_wall if later else None

            acting = await eventually(first_request_after_kill, timeout=120, what="the new leader's Azure call")
            await eventually(
                lambda: all_ready(kube, args.workspaces), timeout=args.timeout, what="every Workspace Ready"
            )
            ready = time.monotonic() - started
            puts = collections.Counter((r.pool or "").lower() for r in simulator.requests_for("PUT"))
            doubles = simulator.puts_while_in_flight()
            bill = collections.Counter(r.target for r in simulator.requests if r.target != "ADMIN")
        finally:
            for replica in replicas:
                await replica.stop()
    return {
        "takeover_s": takeover,
        "acting_s": acting,
        "ready_s": ready,
        "pools": len(puts),
        "puts": puts,
        "doubles": doubles,
        "bill": bill,
    }


async def all_ready(kube: Any, count: int) -> bool | None:
    items, _ = await kube.list(WORKSPACE, NAMESPACE_NAME)
    return sum(is_true(COND_WORKSPACE_READY)(w) for w in items) >= count or None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=3)
    parser.add_argument("--delay", type=float, default=20.0, help="the simulator's provisioning delay (s)")
    parser.add_argument("--lease-duration", type=int, default=15)
    parser.add_argument("--renew-deadline", type=float, default=10.0)
    parser.add_argument("--retry-period", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-failover-") as state:
        result = asyncio.run(run(args, Path(state)))
    print(
        f"workspaces={args.workspaces} provisioning_delay={args.delay:g}s lease={args.lease_duration}s/"
        f"{args.renew_deadline:g}s/{args.retry_period:g}s"
    )
    print(f"takeover (SIGKILL -> standby holds the Lease)   {result['takeover_s']:6.2f} s   (goal < 20 s)")
    print(f"SIGKILL -> the new leader's first Azure request  {result['acting_s']:6.2f} s")
    print(f"all Workspaces Ready after                        {result['ready_s']:6.2f} s")
    print(f"agent pools: {result['pools']}; PUTs per pool: {dict(result['puts'])}")
    print(f"double actions (PUT while a create of the pool ran): {len(result['doubles'])}")
    for request in result["doubles"]:
        print(f"  {request.pool} at {request.time:.3f}: {request.status}")
    print("Azure requests: " + ", ".join(f"{k}={v}" for k, v in sorted(result["bill"].items())))
    return 1 if result["doubles"] else 0


if __name__ == "__main__":
    sys.exit(main())
