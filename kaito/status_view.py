"""``kaito status``: where a Workspace is, read from the API server and drawn as a small table.

``snapshot`` reads the Workspace(s) and their Machines; ``render`` (pure) turns that into text:
the phase, the estimate of the time the nodes still need (``status.nodesExpectedReadyTime``,
written by the Workspace controller; "unknown" when the operator has no observation yet), the
conditions' messages and the Machines. ``--watch`` redraws it every ``--interval`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kaito_operator.api import constants as c
from kaito_operator.api.workspace import (
    PHASE_FAILED,
    PHASE_NODE_JOINING,
    PHASE_SERVING,
    PHASE_WAITING_FOR_AGENT_POOL,
    PHASES,
)
from kaito_operator.workspace.machines import machine_state, parse_time

REQUEST_TIMEOUT: Final = 30.0
CLEAR_SCREEN: Final = "\x1b[H\x1b[2J"
PROVISIONING: Final = (PHASE_WAITING_FOR_AGENT_POOL, PHASE_NODE_JOINING)


@dataclass
class Snapshot:
    namespace: str
    workspaces: list[dict[str, Any]]
    machines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Machines by Workspace name."""


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _age(obj: dict[str, Any], now: datetime) -> str:
    created = parse_time((obj.get("metadata") or {}).get("creationTimestamp"))
    return _duration((now - created).total_seconds()) if created else "?"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def phase_of(workspace: dict[str, Any]) -> str:
    return str((workspace.get("status") or {}).get("phase") or "Unknown")


def estimate_text(workspace: dict[str, Any], now: datetime) -> str:
    """The time the nodes still need, as the status gives it; no status estimate, no number."""
    status = workspace.get("status") or {}
    if phase_of(workspace) not in PROVISIONING:
        return "-"
    expected = parse_time(status.get("nodesExpectedReadyTime"))
    if expected is None:
        return "unknown (no node of this instance type provisioned by this operator yet)"
    left = (expected - now).total_seconds()
    at = expected.strftime("%H:%M:%S UTC")
    if left >= 0:
        return f"about {_duration(left)} left (nodes expected Ready at {at})"
    return f"overdue by {_duration(-left)} (nodes were expected Ready at {at})"


def _progress(phase: str) -> str:
    if phase not in PHASES:
        return phase
    step = PHASES.index(phase) + 1
    return f"{phase} (step {step} of {len(PHASES)}: {' → '.join(PHASES)})"


def render(snapshot: Snapshot, name: str | None, now: datetime) -> str:
    if name is None:
        rows = [
            [
                _meta_name(ws),
                phase_of(ws),
                _condition(ws, c.COND_WORKSPACE_READY).get("status", ""),
                estimate_text(ws, now).split(" (")[0],
                _age(ws, now),
            ]
            for ws in snapshot.workspaces
        ]
        if not rows:
            return f"no workspaces in namespace {snapshot.namespace}"
        return "\n".join(_table(["NAME", "PHASE", "READY", "NODES READY IN", "AGE"], rows))
    (workspace,) = snapshot.workspaces
    status = workspace.get("status") or {}
    resource = workspace.get("resource") or {}
    lines = [
        f"Workspace {snapshot.namespace}/{name}   instance type {resource.get('instanceType', '?')} "
        f"× {resource.get('count', 1)}   age {_age(workspace, now)}",
        f"Phase:    {_progress(phase_of(workspace))}",
        f"Estimate: {estimate_text(workspace, now)}",
        "",
    ]
    conditions = status.get("conditions") or []
    if conditions:
        rows = [
            [str(x.get("type")), str(x.get("status")), str(x.get("reason")), str(x.get("message"))] for x in conditions
        ]
        lines += _table(["CONDITION", "STATUS", "REASON", "MESSAGE"], rows)
    else:
        lines.append("no conditions yet: is the operator running?")
    machines = snapshot.machines.get(name) or []
    if machines:
        lines.append("")
        rows = []
        for machine in machines:
            state = machine_state(machine)
            ready = "True" if state.ready else ("Failed" if state.failure else "False")
            rows.append(
                [
                    state.name,
                    state.instance_type or "?",
                    str(state.launched),
                    state.node_name or "-",
                    ready + (" (deleting)" if state.deleting else ""),
                    _age(machine, now),
                ]
            )
        lines += _table(["MACHINE", "INSTANCE TYPE", "LAUNCHED", "NODE", "READY", "AGE"], rows)
    nodes = status.get("workerNodes") or []
    if nodes:
        lines += ["", f"Worker nodes: {', '.join(nodes)}"]
    return "\n".join(lines)


def _meta_name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


class WorkspaceNotFound(Exception):
    pass


async def snapshot(api: client.ApiClient, namespace: str, name: str | None) -> Snapshot:
    custom = client.CustomObjectsApi(api)
    if name is None:
        listed = await custom.list_namespaced_custom_object(
            c.KAITO_GROUP, c.KAITO_VERSION, namespace, c.WORKSPACE_PLURAL, _request_timeout=REQUEST_TIMEOUT
        )
        return Snapshot(namespace, list(listed.get("items") or []))
    try:
        workspace = await custom.get_namespaced_custom_object(
            c.KAITO_GROUP, c.KAITO_VERSION, namespace, c.WORKSPACE_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as error:
        if error.status == 404:
            raise WorkspaceNotFound(
                f"workspace {name} not found in namespace {namespace} (kubectl get workspaces -n {namespace})"
            ) from error
        raise
    selector = f"{c.LABEL_WORKSPACE}={name},{c.LABEL_WORKSPACE_NAMESPACE}={namespace}"
    machines = await custom.list_cluster_custom_object(
        c.KARPENTER_GROUP,
        c.KARPENTER_VERSION,
        c.MACHINE_PLURAL,
        label_selector=selector,
        _request_timeout=REQUEST_TIMEOUT,
    )
    items = sorted(machines.get("items") or [], key=_meta_name)
    return Snapshot(namespace, [workspace], {name: items})


async def show(
    api: client.ApiClient,
    namespace: str,
    name: str | None,
    *,
    watch: bool,
    interval: float,
    out: TextIO,
) -> int:
    """Print the view once, or redraw it until the Workspace is Serving (0) or Failed (1)."""
    while True:
        view = await snapshot(api, namespace, name)
        text = render(view, name, datetime.now(UTC))
        if watch and out.isatty():
            out.write(CLEAR_SCREEN)
        out.write(text + "\n")
        if watch and not out.isatty():
            out.write("---\n")
        out.flush()
        if name is not None:
            phase = phase_of(view.workspaces[0])
            if phase == PHASE_FAILED:
                return 1
            if not watch or phase == PHASE_SERVING:
                return 0
        elif not watch:
            return 0
        await asyncio.sleep(interval)  # the redraw period of a live view, not a synchronisation


async def _run(args: argparse.Namespace) -> int:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=args.kubeconfig, context=args.context, client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        return await show(api, args.namespace, args.workspace, watch=args.watch, interval=args.interval, out=sys.stdout)


def main(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print(f"error: --interval must be a positive number of seconds, got {args.interval}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except WorkspaceNotFound as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"error: the API server answered {error.status}: {error.reason}", file=sys.stderr)
        return 1
