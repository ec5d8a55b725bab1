"""How fast does the operator bring N Workspaces to Ready on existing nodes, and at what cost?

Starts its own ``full`` control plane (sandbox package), creates N kwok GPU nodes labelled like AKS
nodes and N falcon-7b Workspaces (one per node), runs ``kaito run`` as a separate process (the
provisioner off: no node is missing), and prints: the time until every Workspace is
WorkspaceReady=True, the operator's API requests by verb (from its /metrics), its CPU seconds and
peak RSS, and, once converged, its CPU and API requests over an idle window.

Run: .venv/bin/python benchmarks/workspaces.py [--workspaces 50] [--qps Q] [--concurrency C] [--idle 30]
     (1,000 Workspaces: --workspaces 1000 --timeout 1200)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kaito_operator.api.constants import COND_WORKSPACE_READY
from kaito_operator.api.crds import all_crds
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import NAMESPACE, NODE, ApiError, KubeClient
from kaito_operator.testing import INSTANCE_TYPE, gpu_node, is_true, plain_client
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds
from sandbox.operator_process import OperatorProcess

NAMESPACE_NAME = "bench"


def node(index: int) -> dict[str, Any]:
    """A kwok GPU node of the instance type the workspaces ask for, in the label space of one workspace."""
    return gpu_node(f"aks-gpu-{index:04d}", labels={"apps": f"bench-{index}"})


def workspace(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"falcon-{index:04d}", "namespace": NAMESPACE_NAME},
        "resource": {"instanceType": INSTANCE_TYPE, "labelSelector": {"matchLabels": {"apps": f"bench-{index}"}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }


ready = is_true(COND_WORKSPACE_READY)


async def wait_all_ready(client: KubeClient, count: int, timeout: float) -> None:
    """Watch the namespace's Workspaces until ``count`` of them are Ready."""
    deadline = time.monotonic() + timeout
    states: dict[str, bool] = {}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"only {sum(states.values())} of {count} workspaces ready")
        items, version = await client.list(WORKSPACE, NAMESPACE_NAME)
        states = {w["metadata"]["name"]: ready(w) for w in items}
        if sum(states.values()) >= count:
            return
        # A quiet watch ends by itself no later than the deadline, so the loop comes back to check it.
        watch_seconds = max(1, min(60, int(remaining)))
        try:
            async for event in client.watch(
                WORKSPACE, NAMESPACE_NAME, resource_version=version, timeout_seconds=watch_seconds
            ):
                obj = event["object"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    states[obj["metadata"]["name"]] = ready(obj)
                if sum(states.values()) >= count:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {sum(states.values())} of {count} workspaces ready")
        except ApiError as error:
            if not error.gone:
                raise


def requests_by_verb(metrics_text: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for line in metrics_text.splitlines():
        if line.startswith("kaito_api_requests_total{"):
            verb = re.search(r'verb="([^"]+)"', line)
            if verb:
                totals[verb.group(1)] = totals.get(verb.group(1), 0) + int(float(line.rsplit(" ", 1)[1]))
    return totals


async def run(args: argparse.Namespace, plane: ControlPlane, state: Path) -> dict[str, Any]:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())
        client = plain_client(api)
        await client.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE_NAME}})
        nodes = asyncio.Semaphore(50)

        async def create_node(index: int) -> None:
            async with nodes:
                await client.create(NODE, node(index))

        await asyncio.gather(*(create_node(i) for i in range(args.workspaces)))

        env = {
            "KUBECONFIG": str(plane.kubeconfig),
            "KAITO_CONCURRENCY": str(args.concurrency),
            "KAITO_LOG_LEVEL": "WARNING",
            "KAITO_PROVISIONER_ENABLED": "false",
        }
        if args.qps is not None:
            env.update(KAITO_QPS=str(args.qps), KAITO_BURST=str(max(1, int(args.qps * 2))))
        operator = OperatorProcess(env, state / "operator.log")
        operator.start()
        try:
            await operator.wait_ready()
            cpu_at_start = operator.cpu_seconds()
            started = time.monotonic()
            semaphore = asyncio.Semaphore(50)  # the benchmark's own writes must not swamp the API server

            async def create(index: int) -> None:
                async with semaphore:
                    await client.create(WORKSPACE, workspace(index))

            await asyncio.gather(*(create(i) for i in range(args.workspaces)))
            created = time.monotonic()
            await wait_all_ready(client, args.workspaces, timeout=args.timeout)
            finished = time.monotonic()
            cpu_at_end = operator.cpu_seconds()
            text = await operator.metrics()
            profiler = None
            if args.profile_idle:
                profiler = await asyncio.create_subprocess_exec(
                    *(str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(operator.pid)),
                    *("--output", str(args.profile_idle), "--format", "raw", "--rate", "100", "--nonblocking"),
                    *("--duration", str(int(args.idle))),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            await asyncio.sleep(args.idle)  # a measuring window on the converged operator
            if profiler is not None:
                await asyncio.wait_for(profiler.wait(), 60)
            idle_cpu = operator.cpu_seconds() - cpu_at_end
            idle_text = await operator.metrics()
            peak_rss = operator.peak_rss_bytes()
        finally:
            exit_code = await operator.stop()
        verbs, idle_verbs = requests_by_verb(text), requests_by_verb(idle_text)
        return {
            "create_s": created - started,
            "ready_s": finished - started,
            "verbs": verbs,
            "idle_requests": {v: n - verbs.get(v, 0) for v, n in idle_verbs.items() if n - verbs.get(v, 0)},
            "startup_cpu_s": cpu_at_start,
            "cpu_s": cpu_at_end - cpu_at_start,
            "idle_cpu_s": idle_cpu,
            "peak_rss": peak_rss,
            "exit": exit_code,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--qps", type=float, help="the operator's KAITO_QPS (default: its own default)")
    parser.add_argument("--concurrency", type=int, default=5, help="the operator's KAITO_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds to watch the converged operator")
    parser.add_argument("--profile-idle", type=Path, help="py-spy samples (collapsed stacks) of the idle window")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-workspaces-") as state:
        plane = ControlPlane(Path(state) / "plane", profile="full")
        plane.start()
        try:
            result = asyncio.run(run(args, plane, Path(state)))
        finally:
            plane.stop()
    n = args.workspaces
    rows = [
        ("workspaces (existing nodes)", f"{n}"),
        ("all WorkspaceReady after", f"{result['ready_s']:.2f} s"),
        ("  of which creating them", f"{result['create_s']:.2f} s"),
        ("per workspace", f"{result['ready_s'] / n * 1000:.0f} ms"),
        ("operator CPU until ready (startup)", f"{result['startup_cpu_s']:.2f} s"),
        ("operator CPU for the workspaces", f"{result['cpu_s']:.2f} s ({result['cpu_s'] / n * 1000:.0f} ms each)"),
        ("operator peak RSS", f"{result['peak_rss'] / 2**20:.0f} MiB"),
        (f"operator CPU idle, {args.idle:g} s after Ready", f"{result['idle_cpu_s']:.2f} s"),
        (f"API requests in the {args.idle:g} s idle window", f"{result['idle_requests'] or 0}"),
        ("operator exit code (SIGTERM)", f"{result['exit']}"),
        ("load average (1, 5, 15 min) at the end", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]
    verbs = result["verbs"]
    rows += [
        (f"API requests: {verb}", f"{count} ({count / n:.1f} per workspace)") for verb, count in sorted(verbs.items())
    ]
    rows.append(("API requests: total", f"{sum(verbs.values())}"))
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  value")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
