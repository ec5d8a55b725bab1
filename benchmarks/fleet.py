"""How long N Workspaces that each need a new GPU node take to become Ready, and what they cost.

Starts its own ``full`` control plane and the AKS simulator (provisioning delay D, in this
process), runs ``kaito run`` as a child process with its default settings (plus --qps /
--concurrency when given), creates N falcon-7b Workspaces at once, each in a label space no node
has, and watches Workspaces and Machines. It prints:
- the time until every Workspace is WorkspaceReady (the floor is D);
- p50 / p99 of Workspace created → its Machine created, and of Machine Ready → Workspace Ready;
- the operator's API requests per Workspace by verb, by controller, and its writes per Workspace
  without Events (from its /metrics);
- Azure requests per Machine (from the simulator's record);
- the operator's CPU seconds and peak RSS, and this process's CPU (the simulator and the watches).

Run: .venv/bin/python benchmarks/fleet.py [--workspaces 200] [--delay 30] [--qps Q] [--concurrency C]
     [--profile-operator FILE]  (py-spy records the operator into FILE, an SVG flame graph)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NODE, ApiError, KubeClient
from kaito_operator.testing import condition
from sandbox.operator_process import OperatorProcess
from sandbox.simulated_cluster import simulated_cluster

NAMESPACE_NAME = "fleet"
WRITE_VERBS = ("create", "apply", "patch", "update", "delete")


def workspace(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"falcon-{index:04d}", "namespace": NAMESPACE_NAME},
        "resource": {
            "instanceType": "Standard_NC12s_v3",
            "labelSelector": {"matchLabels": {"apps": f"fleet-{index}"}},
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


@dataclass
class Timeline:
    """When this process first saw each step (monotonic seconds), per Workspace name."""

    created: dict[str, float] = field(default_factory=dict)
    machine_created: dict[str, float] = field(default_factory=dict)
    machine_ready: dict[str, float] = field(default_factory=dict)
    workspace_ready: dict[str, float] = field(default_factory=dict)
    machine_names: dict[str, str] = field(default_factory=dict)
    node_created: dict[str, float] = field(default_factory=dict)
    node_ready: dict[str, float] = field(default_factory=dict)
    """By agent pool (= Machine) name."""
    """Workspace → its Machine (= agent pool) name."""

    def observe_machine(self, machine: dict[str, Any], now: float) -> None:
        owner = (machine["metadata"].get("labels") or {}).get(c.LABEL_WORKSPACE)
        if owner is None:
            return
        self.machine_created.setdefault(owner, now)
        self.machine_names.setdefault(owner, str(machine["metadata"]["name"]).lower())
        if condition(machine, "Ready").get("status") == "True":
            self.machine_ready.setdefault(owner, now)

    def observe_node(self, node: dict[str, Any], now: float) -> None:
        pool = str((node["metadata"].get("labels") or {}).get(c.LABEL_AKS_AGENTPOOL) or "").lower()
        self.node_created.setdefault(pool, now)
        if condition(node, "Ready").get("status") == "True":
            self.node_ready.setdefault(pool, now)

    def observe_workspace(self, obj: dict[str, Any], now: float) -> None:
        if condition(obj, c.COND_WORKSPACE_READY).get("status") == "True":
            self.workspace_ready.setdefault(obj["metadata"]["name"], now)


async def follow(kube: KubeClient, kind: Any, observe: Any, namespace: str | None, selector: str | None) -> None:
    """List + watch ``kind`` for ever, calling ``observe(obj, now)`` on every version seen."""
    while True:
        try:
            items, version = await kube.list(kind, namespace, label_selector=selector)
            for item in items:
                observe(item, time.monotonic())
            async for event in kube.watch(
                kind, namespace, resource_version=version, timeout_seconds=300, label_selector=selector
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    observe(event["object"], time.monotonic())
        except ApiError as error:
            if not error.gone:
                await asyncio.sleep(0.5)  # the API server is busy; list again


async def request_rate(operator: OperatorProcess, rates: list[float]) -> None:
    """API requests per second of the operator, from its /metrics once a second."""
    last: tuple[float, int] | None = None
    while True:
        text = await operator.metrics()
        now, total = time.monotonic(), sum(metric_totals(text, "kaito_api_requests_total", ("verb",)).values())
        if last is not None:
            rates.append((total - last[1]) / (now - last[0]))
        last = (now, total)
        await asyncio.sleep(1.0)  # the sampling period


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def metric_totals(text: str, name: str, keys: tuple[str, ...], skip: dict[str, str] | None = None) -> dict[str, int]:
    """Sum a counter's samples by the given labels (joined with '/'), leaving out ``skip`` matches."""
    totals: dict[str, int] = collections.defaultdict(int)
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if skip and any(labels.get(k) == v for k, v in skip.items()):
            continue
        totals["/".join(labels.get(k, "") or "-" for k in keys)] += int(float(line.rsplit(" ", 1)[1]))
    return dict(totals)


async def run(args: argparse.Namespace, state: Path) -> dict[str, Any]:
    async with simulated_cluster(state, namespace=NAMESPACE_NAME, provisioning_delay_s=args.delay) as cluster:
        kube, simulator = cluster.kube, cluster.simulator
        environment = {
            **cluster.operator_environment,
            "KAITO_LOG_LEVEL": "WARNING",
        }
        if args.qps is not None:
            environment["KAITO_QPS"] = str(args.qps)
            environment["KAITO_BURST"] = str(max(1, int(args.qps * 2)))
        if args.concurrency is not None:
            environment["KAITO_CONCURRENCY"] = str(args.concurrency)
        operator = OperatorProcess(environment, state / "operator.log")
        operator.start()
        profiler: asyncio.subprocess.Process | None = None
        timeline = Timeline()
        watchers = [
            asyncio.create_task(follow(kube, WORKSPACE, timeline.observe_workspace, NAMESPACE_NAME, None)),
            asyncio.create_task(follow(kube, NODE, timeline.observe_node, None, c.LABEL_AKS_AGENTPOOL)),
            asyncio.create_task(
                follow(
                    kube,
                    MACHINE,
                    timeline.observe_machine,
                    None,
                    f"{c.LABEL_WORKSPACE_NAMESPACE}={NAMESPACE_NAME}",
                )
            ),
        ]
        try:
            await operator.wait_ready()
            if args.profile_operator:
                profiler = await asyncio.create_subprocess_exec(
                    *(
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "--pid",
                        str(operator.pid),
                        "--output",
                        str(args.profile_operator),
                    ),
                    *("--rate", "50", "--nonblocking"),
                    *(("--format", "raw") if args.profile_operator.suffix == ".txt" else ()),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            startup_cpu = operator.cpu_seconds()
            own_cpu_start = resource.getrusage(resource.RUSAGE_SELF)
            metrics_before = await operator.metrics()
            started = time.monotonic()
            rates: list[float] = []
            sampler = asyncio.create_task(request_rate(operator, rates))
            watchers.append(sampler)

            async def create(index: int) -> None:
                body = workspace(index)
                await kube.create(WORKSPACE, body)
                timeline.created[body["metadata"]["name"]] = time.monotonic()

            await asyncio.gather(*(create(i) for i in range(args.workspaces)))
            created = time.monotonic() - started
            deadline = started + args.timeout
            while len(timeline.workspace_ready) < args.workspaces:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(timeline.workspace_ready)} of {args.workspaces} Ready")
                await asyncio.sleep(0.1)  # the watch tasks fill the timeline
            ready = max(timeline.workspace_ready.values()) - started
            cpu = operator.cpu_seconds() - startup_cpu
            peak_rss = operator.peak_rss_bytes()
            metrics_text = await operator.metrics()
            own_cpu_end = resource.getrusage(resource.RUSAGE_SELF)
            azure_at_ready = len(simulator.requests)
            # Steady state: nothing changes now; what does the operator still send?
            await asyncio.sleep(args.idle)  # a measuring window, not synchronisation
            idle_cpu = operator.cpu_seconds() - startup_cpu - cpu
            metrics_idle = await operator.metrics()
            azure_idle = collections.Counter(
                r.target for r in simulator.requests[azure_at_ready:] if r.target not in (None, "ADMIN")
            )
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)  # py-spy writes its output and exits
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(profiler.wait(), 60)
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            exit_code = await operator.stop()
        azure = collections.Counter(r.target for r in simulator.requests if r.target not in (None, "ADMIN"))
        # The simulator's clock is the wall clock; the timeline's is monotonic.
        to_monotonic = time.monotonic() - time.time()
        accepted = {
            (r.pool or "").lower(): r.time + to_monotonic
            for r in reversed(simulator.requests_for("PUT"))
            if r.status == 201
        }
        finished = {
            operation.pool.lower(): operation.end_time.timestamp() + to_monotonic
            for operation in simulator.cluster.operations.values()
            if operation.kind == "create" and operation.end_time is not None
        }
        machines = len(simulator.cluster.pools)
    return {
        "timeline": timeline,
        "started": started,
        "create_s": created,
        "ready_s": ready,
        "cpu_s": cpu,
        "startup_cpu_s": startup_cpu,
        "idle_cpu_s": idle_cpu,
        "peak_rss": peak_rss,
        "own_cpu_s": (own_cpu_end.ru_utime + own_cpu_end.ru_stime) - (own_cpu_start.ru_utime + own_cpu_start.ru_stime),
        "metrics_before": metrics_before,
        "metrics": metrics_text,
        "metrics_idle": metrics_idle,
        "azure": azure,
        "machines": machines,
        "peak_rate": max(rates, default=0.0),
        "azure_idle": azure_idle,
        "accepted": accepted,
        "finished": finished,
        "exit": exit_code,
    }


def difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--delay", type=float, default=30.0, help="the simulator's provisioning delay D (s)")
    parser.add_argument("--qps", type=float, help="the operator's KAITO_QPS (default: its own default)")
    parser.add_argument("--concurrency", type=int, help="the operator's KAITO_CONCURRENCY")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds to watch the converged operator")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--profile-operator",
        type=Path,
        help="py-spy samples of the operator: an SVG flame graph, or collapsed stacks (.txt)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-fleet-") as state:
        result = asyncio.run(run(args, Path(state)))
    n = args.workspaces
    timeline: Timeline = result["timeline"]
    to_machine = [
        timeline.machine_created[w] - timeline.created[w] for w in timeline.created if w in timeline.machine_created
    ]
    to_ready = [
        timeline.workspace_ready[w] - timeline.machine_ready[w]
        for w in timeline.workspace_ready
        if w in timeline.machine_ready
    ]
    provisioning = [
        timeline.machine_ready[w] - timeline.machine_created[w]
        for w in timeline.machine_ready
        if w in timeline.machine_created
    ]
    pools = timeline.machine_names
    to_put = [
        result["accepted"][pools[w]] - timeline.machine_created[w]
        for w in timeline.machine_created
        if w in pools and pools[w] in result["accepted"]
    ]
    done_to_ready = [
        timeline.machine_ready[w] - result["finished"][pools[w]]
        for w in timeline.machine_ready
        if w in pools and pools[w] in result["finished"]
    ]
    node_ready_to_machine_ready = [
        timeline.machine_ready[w] - timeline.node_ready[pools[w]]
        for w in timeline.machine_ready
        if w in pools and pools[w] in timeline.node_ready
    ]
    node_to_ready = [
        timeline.node_ready[pool] - timeline.node_created[pool]
        for pool in timeline.node_ready
        if pool in timeline.node_created
    ]
    load = os.getloadavg()
    rows = [
        ("workspaces needing a new node", f"{n}"),
        ("provisioning delay D", f"{args.delay:g} s"),
        ("all WorkspaceReady after", f"{result['ready_s']:.1f} s (D + {result['ready_s'] - args.delay:.1f} s)"),
        ("  of which creating the Workspaces", f"{result['create_s']:.1f} s"),
        (
            "Workspace created -> Machine created",
            f"p50 {percentile(to_machine, 50):.2f} s, p99 {percentile(to_machine, 99):.2f} s",
        ),
        (
            "Machine created -> Machine Ready",
            f"p50 {percentile(provisioning, 50):.2f} s, p99 {percentile(provisioning, 99):.2f} s",
        ),
        (
            "  Machine created -> its PUT accepted",
            f"p50 {percentile(to_put, 50):.2f} s, p99 {percentile(to_put, 99):.2f} s",
        ),
        (
            "  create operation done -> Machine Ready",
            f"p50 {percentile(done_to_ready, 50):.2f} s, p99 {percentile(done_to_ready, 99):.2f} s",
        ),
        (
            "  node created -> node Ready (kwok)",
            f"p50 {percentile(node_to_ready, 50):.2f} s, p99 {percentile(node_to_ready, 99):.2f} s",
        ),
        (
            "  node Ready -> Machine Ready",
            f"p50 {percentile(node_ready_to_machine_ready, 50):.2f} s, "
            f"p99 {percentile(node_ready_to_machine_ready, 99):.2f} s",
        ),
        (
            "Machine Ready -> Workspace Ready",
            f"p50 {percentile(to_ready, 50):.2f} s, p99 {percentile(to_ready, 99):.2f} s",
        ),
        ("  (Workspace Ready before its Machine)", f"{n - len(to_ready)}"),
        ("operator CPU for the fleet", f"{result['cpu_s']:.1f} s ({result['cpu_s'] / n * 1000:.0f} ms per Workspace)"),
        ("operator CPU at start-up", f"{result['startup_cpu_s']:.1f} s"),
        (f"operator CPU idle, {args.idle:g} s after Ready", f"{result['idle_cpu_s']:.2f} s"),
        ("operator API requests/s, peak over 1 s", f"{result['peak_rate']:.0f}"),
        ("operator peak RSS", f"{result['peak_rss'] / 2**20:.0f} MiB"),
        ("simulator + watches CPU (this process)", f"{result['own_cpu_s']:.1f} s"),
        ("operator exit code (SIGTERM)", f"{result['exit']}"),
        ("load average (1, 5, 15 min) at the end", f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"),
    ]
    before, after, idle = result["metrics_before"], result["metrics"], result["metrics_idle"]
    name = "kaito_api_requests_total"
    by_verb = difference(metric_totals(after, name, ("verb",)), metric_totals(before, name, ("verb",)))
    rows += [(f"API {verb}", f"{count} ({count / n:.2f} per Workspace)") for verb, count in sorted(by_verb.items())]
    keys = ("verb", "resource", "subresource")
    by_resource = difference(metric_totals(after, name, keys), metric_totals(before, name, keys))
    writes = {k: v for k, v in by_resource.items() if k.split("/")[0] in WRITE_VERBS and k.split("/")[1] != "events"}
    rows.append(("API writes per Workspace, not Events", f"{sum(writes.values()) / n:.2f}"))
    rows += [(f"  {key}", f"{count / n:.2f}") for key, count in sorted(writes.items())]
    events = sum(v for k, v in by_resource.items() if k.split("/")[1] == "events")
    rows.append(("Event writes per Workspace", f"{events / n:.2f}"))
    controller_keys = ("controller", "verb")
    by_controller = difference(
        metric_totals(after, "kaito_api_requests_by_controller_total", controller_keys),
        metric_totals(before, "kaito_api_requests_by_controller_total", controller_keys),
    )
    rows += [
        (f"API by controller {key}", f"{count / n:.2f} per Workspace") for key, count in sorted(by_controller.items())
    ]
    idle_requests = difference(metric_totals(idle, name, keys), metric_totals(after, name, keys))
    rows.append(
        (f"API requests in the {args.idle:g} s idle window", f"{sum(idle_requests.values())} {idle_requests or ''}")
    )
    reconcile_keys = ("controller", "result")
    idle_reconciles = difference(
        metric_totals(idle, "kaito_reconcile_total", reconcile_keys),
        metric_totals(after, "kaito_reconcile_total", reconcile_keys),
    )
    rows.append((f"reconciles in the {args.idle:g} s idle window", f"{idle_reconciles or 0}"))
    rows.append((f"Azure requests in the {args.idle:g} s idle window", f"{dict(result['azure_idle']) or 0}"))
    azure = result["azure"]
    machines = max(1, result["machines"])
    rows += [
        (f"Azure {target}", f"{count} ({count / machines:.2f} per Machine)") for target, count in sorted(azure.items())
    ]
    rows.append(("Azure requests per Machine", f"{sum(azure.values()) / machines:.2f}"))
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  value")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
