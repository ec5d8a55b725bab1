"""Where is my Workspace? Its phases, seen through a watch while the embedded provisioner gets its
node from the AKS simulator, come in the documented order; once a Machine of the instance type has
been seen to become Ready, the next Workspace's status says when its nodes should be Ready; and
``kaito status`` prints it against the real API server."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.api.workspace import PHASES
from kaito_operator.runtime import KubeClient
from kaito_operator.testing import has_condition, is_true, wait_for
from tests.e2e.e2e_kit import EndToEnd, falcon_7b

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


class StatusLog:
    """Every status of one Workspace, in the order the API server stored them (a watch)."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []

    @property
    def phases(self) -> list[str]:
        seen: list[str] = []
        for status in self.statuses:
            phase = status.get("phase")
            if phase and (not seen or seen[-1] != phase):
                seen.append(phase)
        return seen


@contextlib.asynccontextmanager
async def recording(kube: KubeClient, namespace: str, name: str) -> AsyncIterator[StatusLog]:
    log = StatusLog()
    _, version = await kube.list(WORKSPACE, namespace)

    async def follow() -> None:
        async for event in kube.watch(
            WORKSPACE, namespace, resource_version=version, timeout_seconds=300, field_selector=f"metadata.name={name}"
        ):
            if event["type"] in ("ADDED", "MODIFIED"):
                log.statuses.append(event["object"].get("status") or {})

    task = asyncio.create_task(follow())
    try:
        yield log
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def serving(workspace: dict[str, Any] | None) -> bool:
    return ((workspace or {}).get("status") or {}).get("phase") == "Serving"


async def kaito_status(e2e: EndToEnd, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kaito",
        "status",
        *args,
        "--kubeconfig",
        str(e2e.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_phases_come_in_order_the_estimate_follows_observations_and_kaito_status_shows_them(
    e2e: EndToEnd,
) -> None:
    first = falcon_7b(e2e.namespace, name="first")
    second = falcon_7b(e2e.namespace, name="second")
    async with e2e.operator():
        async with recording(e2e.kube, e2e.namespace, "first") as log:
            await e2e.kube.create(WORKSPACE, first)
            await e2e.wait_workspace("first", is_true(c.COND_WORKSPACE_READY), what="first WorkspaceReady")
            await e2e.wait_workspace("first", serving)
        phases = log.phases
        assert phases[0] == "WaitingForAgentPool", phases
        assert phases[-1] == "Serving", phases
        # Steps may pass between two writes (kwok makes a registered node Ready at once, so NodeJoining
        # is often never written here); what is written must follow the documented order.
        positions = [PHASES.index(phase) for phase in phases]
        assert positions == sorted(positions), f"phases out of order: {phases}"
        # The operator had seen no Machine become Ready before: no estimate was invented.
        assert all("nodesExpectedReadyTime" not in status for status in log.statuses)

        (machine,) = await e2e.machines()
        await wait_for(e2e.kube, MACHINE, machine["metadata"]["name"], has_condition("Ready", "True"), what="Ready")

        async with recording(e2e.kube, e2e.namespace, "second") as log:
            await e2e.kube.create(WORKSPACE, second)
            await e2e.wait_workspace("second", is_true(c.COND_WORKSPACE_READY), what="second WorkspaceReady")
            await e2e.wait_workspace("second", serving)
        estimates = [
            (status["phase"], status["nodesExpectedReadyTime"])
            for status in log.statuses
            if "nodesExpectedReadyTime" in status
        ]
        assert estimates, "one Machine was seen provisioned: the next Workspace's status must carry an estimate"
        assert {phase for phase, _ in estimates} <= {"WaitingForAgentPool", "NodeJoining"}
        assert "nodesExpectedReadyTime" not in log.statuses[-1], "no estimate once the nodes are there"
        second_machine = next(m for m in await e2e.machines() if m["metadata"]["labels"][c.LABEL_WORKSPACE] == "second")
        assert all(at >= second_machine["metadata"]["creationTimestamp"] for _, at in estimates)

        code, output = await kaito_status(e2e, "second", "-n", e2e.namespace)
        assert code == 0, output
        assert "Phase:    Serving" in output
        assert second_machine["metadata"]["name"] in output
        assert "WorkspaceReady   True" in output

        code, output = await kaito_status(e2e, "-n", e2e.namespace)
        assert code == 0, output
        listed = {line.split()[0]: line.split()[1] for line in output.splitlines()[1:]}
        assert listed == {"first": "Serving", "second": "Serving"}

        code, output = await kaito_status(e2e, "third", "-n", e2e.namespace)
        assert code == 1
        assert f"workspace third not found in namespace {e2e.namespace}" in output
