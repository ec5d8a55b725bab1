"""How fast does the operator bring N Workspaces to Ready on existing nodes, and at what cost?

Starts its own ``full`` control plane (sandbox package), creates N kwok GPU nodes labelled like AKS
nodes and N falcon-7b Workspaces (one per node), runs ``kaito run`` as a separate process, and
prints: the time until every Workspace is WorkspaceReady=True, the operator's API requests by verb
(from its /metrics), and the operator process's CPU seconds.

Run: .venv/bin/python benchmarks/workspaces.py [--workspaces 50] [--qps 50] [--concurrency 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from kaito_operator.api.constants import COND_WORKSPACE_READY
from kaito_operator.api.crds import all_crds
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import NAMESPACE, NODE, ApiError, KubeClient
from kaito_operator.testing import INSTANCE_TYPE, gpu_node, is_true, plain_client
from sandbox.controlplane import ControlPlane, free_port
from sandbox.kube import api_client_from_kubeconfig, install_crds

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
        items, version = await client.list(WORKSPACE, NAMESPACE_NAME)
        states = {w["metadata"]["name"]: ready(w) for w in items}
        if sum(states.values()) >= count:
            return
        try:
            async for event in client.watch(WORKSPACE, NAMESPACE_NAME, resource_version=version, timeout_seconds=60):
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests_by_verb(metrics_text: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    for line in metrics_text.splitlines():
        if line.startswith("kaito_api_requests_total{"):
            verb = re.search(r'verb="([^"]+)"', line)
            if verb:
                totals[verb.group(1)] = totals.get(verb.group(1), 0) + int(float(line.rsplit(" ", 1)[1]))
    return totals


async def http_get(url: str, timeout: float) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as response:
                    text = await response.text()
                    if response.status == 200 or time.monotonic() > deadline:
                        return response.status, text
            except aiohttp.ClientError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)  # the operator process is starting; poll its endpoint


async def run(args: argparse.Namespace, plane: ControlPlane) -> dict[str, Any]:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())
        client = plain_client(api)
        await client.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE_NAME}})
        await asyncio.gather(*(client.create(NODE, node(i)) for i in range(args.workspaces)))

        health, metrics = free_port(), free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "KAITO_HEALTH_PORT": str(health),
            "KAITO_METRICS_PORT": str(metrics),
            "KAITO_BIND_ADDRESS": "127.0.0.1",
            "KAITO_QPS": str(args.qps),
            "KAITO_BURST": str(max(1, int(args.qps * 2))),
            "KAITO_CONCURRENCY": str(args.concurrency),
            "KAITO_LOG_LEVEL": "WARNING",
        }
        operator = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kaito.cli", "run", env=env, stderr=asyncio.subprocess.DEVNULL
        )
        try:
            status, _ = await http_get(f"http://127.0.0.1:{health}/readyz", timeout=60)
            assert status == 200, "the operator did not become ready"
            cpu_at_start = cpu_seconds(operator.pid)
            started = time.monotonic()
            await asyncio.gather(*(client.create(WORKSPACE, workspace(i)) for i in range(args.workspaces)))
            created = time.monotonic()
            await wait_all_ready(client, args.workspaces, timeout=args.timeout)
            finished = time.monotonic()
            cpu_at_end = cpu_seconds(operator.pid)
            _, text = await http_get(f"http://127.0.0.1:{metrics}/metrics", timeout=10)
        finally:
            operator.send_signal(signal.SIGTERM)
            exit_code = await operator.wait()
        return {
            "create_s": created - started,
            "ready_s": finished - started,
            "verbs": requests_by_verb(text),
            "startup_cpu_s": cpu_at_start,
            "cpu_s": cpu_at_end - cpu_at_start,
            "exit": exit_code,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=50)
    parser.add_argument("--qps", type=float, default=50.0, help="the operator's KAITO_QPS")
    parser.add_argument("--concurrency", type=int, default=5, help="the operator's KAITO_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-workspaces-") as state:
        plane = ControlPlane(Path(state), profile="full")
        plane.start()
        try:
            result = asyncio.run(run(args, plane))
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
        ("operator exit code (SIGTERM)", f"{result['exit']}"),
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
