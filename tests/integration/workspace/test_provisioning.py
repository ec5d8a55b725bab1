"""(b)-(e) Workspaces that need new nodes: Machines, failures, deletion, and a restart mid-way.

A stand-in provisioner (workspace_testkit.StandInProvisioner) plays gpu-provisioner: it turns the
Machines into kwok GPU nodes and marks them Ready, or reports a launch failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from typing import Any

import pytest

from kaito.operator import DEFAULT_CONTROLLERS
from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import DEPLOYMENT, EVENT, NODE, POD, SERVICE
from kaito_operator.testing import condition, delete_quietly, is_true, plain_client, wait_for, wait_for_item
from kaito_operator.workspace.names import AGENT_POOL_NAME, machine_name
from tests.integration.workspace.workspace_testkit import (
    StandInProvisioner,
    delete_workspace_and_wait,
    machines_of,
    preset_workspace,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.full]

QUOTA_MESSAGE = (
    "Operation could not be completed as it results in exceeding approved standardNCSv3Family Cores quota. "
    "Additional details - Deployment Model: Resource Manager, Location: westus2, Current Limit: 0"
)


def _labels() -> dict[str, str]:
    return {"apps": f"llm-{uuid.uuid4().hex[:6]}"}


async def test_two_machines_are_created_together_then_the_workload_runs_on_both(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    provisioner = StandInProvisioner(namespace, hold_until=2)
    try:
        async with running_operator(kube_api, [*DEFAULT_CONTROLLERS, provisioner.factory]):
            created = await client.create(
                WORKSPACE, preset_workspace(name="ws2", namespace=namespace, labels=_labels(), count=2)
            )
            ready = await wait_for(
                client, WORKSPACE, "ws2", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90, what="ready"
            )
            assert provisioner.machines_seen_when_first_ready == 2, "both Machines existed before either was Ready"
            machines = await machines_of(client, namespace)
            names = sorted(m["metadata"]["name"] for m in machines)
            uid = created["metadata"]["uid"]
            assert names == sorted([machine_name(uid, 0), machine_name(uid, 1)])
            assert all(AGENT_POOL_NAME.match(name) for name in names)
            machine = machines[0]
            assert machine["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
            assert machine["spec"]["resources"]["requests"]["storage"] == "50Gi"
            assert machine["metadata"]["labels"][c.LABEL_WORKSPACE] == "ws2"
            assert ready is not None
            assert sorted(ready["status"]["workerNodes"]) == names

            pods, _ = await client.list(POD, namespace, label_selector=f"{c.LABEL_WORKSPACE}=ws2")
            assert sorted(p["spec"]["nodeName"] for p in pods) == names, "one replica on each new node"
            assert all(p["status"]["phase"] == "Running" for p in pods)

            # (d) deletion: Machines go first (the provisioner holds them with its finalizer), then
            # the Workspace; the Deployment and Service follow by owner reference.
            await client.delete(WORKSPACE, "ws2", namespace)
            deleting = await wait_for(
                client,
                WORKSPACE,
                "ws2",
                lambda obj: obj is None or is_true(c.COND_WORKSPACE_DELETING)(obj),
                namespace=namespace,
                what="WorkspaceDeleting",
            )
            if deleting is not None:
                assert condition(deleting, c.COND_WORKSPACE_DELETING)["reason"] == "workspaceDeleted"
            await wait_for(
                client, WORKSPACE, "ws2", lambda obj: obj is None, namespace=namespace, what="workspace gone"
            )
            assert await machines_of(client, namespace) == [], "the finalizer waited for the Machines"
            await wait_for(
                client, DEPLOYMENT, "ws2", lambda obj: obj is None, namespace=namespace, what="deployment gone"
            )
            await wait_for(client, SERVICE, "ws2", lambda obj: obj is None, namespace=namespace, what="service gone")
    finally:
        await provisioner.cleanup(client)


async def test_a_machine_failure_reaches_resource_ready_within_seconds(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    provisioner = StandInProvisioner(namespace, fail_with=("LaunchFailed", QUOTA_MESSAGE))
    async with running_operator(kube_api, [*DEFAULT_CONTROLLERS, provisioner.factory]):
        await client.create(WORKSPACE, preset_workspace(name="quota", namespace=namespace, labels=_labels()))
        failed = await wait_for(
            client,
            WORKSPACE,
            "quota",
            lambda obj: condition(obj, c.COND_RESOURCE_READY).get("status") == "False",
            namespace=namespace,
            timeout=60,
            what="failure",
        )
        seen_at = time.monotonic()
        assert provisioner.failed_at is not None
        assert seen_at - provisioner.failed_at < 5, "the failure reached the workspace within 5 s"
        resource = condition(failed, c.COND_RESOURCE_READY)
        assert (resource["reason"], resource["message"]) == ("LaunchFailed", QUOTA_MESSAGE)
        assert condition(failed, c.COND_WORKSPACE_READY)["status"] == "False"
        assert condition(failed, c.COND_MACHINE_READY)["reason"] == "checkMachineStatusFailed"
        await wait_for_item(
            client,
            EVENT,
            namespace,
            lambda e: e["type"] == "Warning" and e["reason"] == "LaunchFailed" and QUOTA_MESSAGE in e["message"],
            field_selector="involvedObject.name=quota",
            what="a Warning Event with the quota message",
        )
        assert len(await machines_of(client, namespace)) == 1, "a failed Machine is reported, not replaced"
        await delete_workspace_and_wait(client, "quota", namespace)


async def test_a_killed_operator_process_is_replaced_without_a_second_set_of_machines(
    kube_api: Any, namespace: str, control_plane: Any
) -> None:
    client = plain_client(kube_api)
    labels = _labels()
    # Phase 1: `kaito run` as a real process, killed (SIGKILL: no clean-up at all) mid-way, after it
    # created the Machines and before any of them is Ready (no provisioner is running).
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kaito.cli",
        "run",
        env={
            **os.environ,
            "KUBECONFIG": str(control_plane.kubeconfig),
            "KAITO_HEALTH_PORT": "0",
            "KAITO_METRICS_PORT": "0",
            "KAITO_BIND_ADDRESS": "127.0.0.1",
        },
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await client.create(WORKSPACE, preset_workspace(name="restart", namespace=namespace, labels=labels, count=2))
        await wait_for(
            client,
            WORKSPACE,
            "restart",
            lambda obj: condition(obj, c.COND_MACHINE_READY).get("reason") == "CreateMachinePending",
            namespace=namespace,
            what="machines pending",
        )
        first = sorted(m["metadata"]["name"] for m in await machines_of(client, namespace))
        assert len(first) == 2
    finally:
        process.kill()
        await process.wait()
    # Phase 2: a new operator (fresh caches, fresh memory) takes over and finishes.
    provisioner = StandInProvisioner(namespace, hold_until=2)
    try:
        async with running_operator(kube_api, [*DEFAULT_CONTROLLERS, provisioner.factory]):
            await wait_for(
                client,
                WORKSPACE,
                "restart",
                is_true(c.COND_WORKSPACE_READY),
                namespace=namespace,
                timeout=90,
                what="ready",
            )
            again = sorted(m["metadata"]["name"] for m in await machines_of(client, namespace))
            assert again == first, "no second set of Machines"
            await delete_workspace_and_wait(client, "restart", namespace)
    finally:
        await provisioner.cleanup(client)
        for name in first:
            await delete_quietly(client, NODE, name)
