"""End to end: a Kaito Workspace that no existing node can serve gets its GPU nodes from the embedded
provisioner, through the real Azure SDK and workload identity, from the AKS simulator, on the real
control plane (kwok keeps the new nodes Ready and runs the pods)."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_provisioner.quantity import to_gib_rounded_up
from gpu_provisioner.setup import MACHINE_CONTROLLER
from gpu_provisioner.testing import fast_provisioner
from kaito.testing import reconciled_again, reconciles
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NODE, POD
from kaito_operator.testing import condition, eventually, has_condition, is_true, wait_for
from sandbox.aks_simulator import Fault
from tests.e2e.e2e_kit import EndToEnd, falcon_7b

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


async def test_falcon_7b_gets_an_agent_pool_a_node_and_becomes_ready_then_leaves_nothing_behind(e2e: EndToEnd) -> None:
    simulator = e2e.simulator
    workspace = falcon_7b(e2e.namespace)
    selector_labels = workspace["resource"]["labelSelector"]["matchLabels"]
    async with e2e.operator():
        await e2e.kube.create(WORKSPACE, workspace)
        ready = await e2e.wait_workspace("workspace-falcon-7b", is_true(c.COND_WORKSPACE_READY), what="WorkspaceReady")
        assert ready is not None
        (created,) = await e2e.machines()
        pool = created["metadata"]["name"]
        # The workspace may pick the new node up as soon as it is Ready, a moment before the
        # provisioner's next reconcile marks the Machine Ready: wait for that, do not assume it.
        machine = await wait_for(e2e.kube, MACHINE, pool, has_condition("Ready", "True"), what="Machine Ready")
        assert machine is not None and condition(machine, "Ready")["status"] == "True"

        # The agent pool AKS was asked for, read from the simulator's record of the PUT.
        (put,) = simulator.requests_for("PUT", pool)
        properties = put.body["properties"]
        assert properties["vmSize"] == "Standard_NC12s_v3"
        assert properties["osDiskSizeGB"] == to_gib_rounded_up(machine["spec"]["resources"]["requests"]["storage"])
        assert properties["osDiskSizeGB"] < 10_000, "GiB, not bytes"
        assert properties["nodeTaints"] == ["sku=gpu:NoSchedule"]
        labels = properties["nodeLabels"]
        assert labels[c.LABEL_WORKSPACE] == "workspace-falcon-7b"
        assert labels[c.LABEL_WORKSPACE_NAMESPACE] == e2e.namespace
        assert labels[c.LABEL_PROVISIONER_NAME] == "default"
        assert labels[c.LABEL_MACHINE_TYPE] == "gpu"
        assert selector_labels, "the check below is vacuous without labels"
        assert all(labels[key] == value for key, value in selector_labels.items())
        assert (properties["count"], properties["mode"], properties["osType"]) == (1, "User", "Linux")

        # Workload identity was really used: the token endpoint saw the federated assertion.
        token = simulator.requests_for("TOKEN")[0]
        assert token.status == 200
        assert token.body["client_assertion"] == simulator.config.federated_token
        assert token.body["client_id"] == simulator.config.client_id

        # The inference pod runs on the new node.
        node_name = machine["status"]["nodeName"]
        assert ready["status"]["workerNodes"] == [node_name]
        pods, _ = await e2e.kube.list(POD, e2e.namespace, label_selector=f"{c.LABEL_WORKSPACE}=workspace-falcon-7b")
        assert [p["spec"]["nodeName"] for p in pods] == [node_name]

        await e2e.delete_workspace("workspace-falcon-7b")
        await wait_for(e2e.kube, MACHINE, pool, lambda obj: obj is None, what="the Machine gone")
        await wait_for(e2e.kube, NODE, node_name, lambda obj: obj is None, what="the node gone")
        assert pool not in simulator.cluster.pools
        assert [r.status for r in simulator.requests_for("DELETE", pool)] == [202]
        assert not await e2e.machines()


async def test_a_wrong_client_id_shows_on_the_machine_and_the_workspace_without_crashing(e2e: EndToEnd) -> None:
    wrong = "11111111-2222-3333-4444-555555555555"
    async with e2e.operator(AZURE_CLIENT_ID=wrong) as (operator, _):
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace))
        failed = await e2e.wait_workspace(
            "workspace-falcon-7b", lambda w: condition(w, c.COND_RESOURCE_READY).get("status") == "False"
        )
        message = condition(failed, c.COND_RESOURCE_READY)["message"]
        assert "Entra ID refused the workload identity" in message and "AADSTS700016" in message
        (machine,) = await e2e.machines()
        assert condition(machine, c.COND_MACHINE_LAUNCHED)["reason"] == "LaunchFailed"
        assert wrong in condition(machine, "Ready")["message"]
        assert operator.manager.failure is None and operator.manager.ready
        assert not e2e.simulator.requests_for("PUT")
        await e2e.delete_workspace("workspace-falcon-7b")


@pytest.mark.parametrize(
    ("fault", "allowed_sizes", "azure_text"),
    [
        (Fault.quota_exceeded(times=None), None, "exceeding approved standardNCADSA100v4Family Cores quota"),
        (None, ["Standard_NC24ads_A100_v4"], "The VM size of Standard_NC12s_v3 is not allowed in your subscription"),
    ],
    ids=["quota-exceeded", "sku-not-allowed"],
)
async def test_a_permanent_azure_refusal_reaches_the_workspace_with_few_puts(
    e2e: EndToEnd, fault: Fault | None, allowed_sizes: list[str] | None, azure_text: str
) -> None:
    if fault is not None:
        e2e.simulator.add_fault(fault)
    e2e.simulator.config.allowed_vm_sizes = allowed_sizes
    async with e2e.operator() as (operator, _):
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace))
        failed = await e2e.wait_workspace(
            "workspace-falcon-7b", lambda w: condition(w, c.COND_RESOURCE_READY).get("status") == "False"
        )
        assert azure_text in condition(failed, c.COND_RESOURCE_READY)["message"]
        (machine,) = await e2e.machines()
        launched = condition(machine, c.COND_MACHINE_LAUNCHED)
        assert (launched["status"], launched["reason"]) == ("False", "LaunchFailed")
        assert azure_text in launched["message"]
        # A change to the Machine wakes the provisioner; the refused request is not sent again before
        # the re-check interval (10 min by default).
        puts = len(e2e.simulator.requests_for("PUT"))
        before = reconciles(operator, MACHINE_CONTROLLER)
        await e2e.kube.patch(MACHINE, machine["metadata"]["name"], {"metadata": {"annotations": {"touched": "yes"}}})
        await reconciled_again(operator, MACHINE_CONTROLLER, before)
        assert len(e2e.simulator.requests_for("PUT")) == puts
        await e2e.delete_workspace("workspace-falcon-7b")
        assert not await e2e.machines()


async def test_throttling_and_a_server_error_on_put_are_ridden_out(e2e: EndToEnd) -> None:
    e2e.simulator.add_fault(Fault.throttle("PUT", retry_after=1))
    e2e.simulator.add_fault(Fault.server_error("PUT"))
    async with e2e.operator():
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace))
        await e2e.wait_workspace("workspace-falcon-7b", is_true(c.COND_WORKSPACE_READY), what="WorkspaceReady")
        puts = e2e.simulator.requests_for("PUT")
        assert [r.status for r in puts] == [429, 500, 201]
        assert puts[1].time - puts[0].time >= 1.0, "Retry-After was honoured"
        await e2e.delete_workspace("workspace-falcon-7b")


async def test_three_machines_are_provisioned_with_overlapping_operations(e2e: EndToEnd) -> None:
    e2e.simulator.config.provisioning_delay_s = 3
    async with e2e.operator():
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace, count=3))
        ready = await e2e.wait_workspace(
            "workspace-falcon-7b", is_true(c.COND_WORKSPACE_READY), timeout=120, what="WorkspaceReady"
        )
        pools = sorted(m["metadata"]["name"] for m in await e2e.machines())
        assert len(pools) == 3 and sorted(e2e.simulator.cluster.pools) == pools
        assert len(ready["status"]["workerNodes"]) == 3
        puts = {r.pool: r.time for r in e2e.simulator.requests_for("PUT") if r.status == 201 and r.pool}
        assert sorted(puts) == pools, "one PUT per pool"
        finished = [
            op.end_time.timestamp()
            for op in e2e.simulator.cluster.operations.values()
            if op.kind == "create" and op.end_time is not None
        ]
        assert max(puts.values()) < min(finished), "every create started before the first one finished"
        await e2e.delete_workspace("workspace-falcon-7b", timeout=120)
        assert not e2e.simulator.cluster.pools


async def test_the_garbage_collector_removes_the_pool_of_a_machine_deleted_while_the_operator_was_down(
    e2e: EndToEnd,
) -> None:
    e2e.simulator.config.provisioning_delay_s = 3
    settings = fast_provisioner(e2e.selector, gc_interval_s=0.5, gc_grace_period_s=1)
    async with e2e.operator(settings):
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace))

        async def pool_creating() -> str | None:
            return next(iter(e2e.simulator.cluster.pools), None)

        pool = await eventually(pool_creating, what="the agent pool's PUT")
    # The operator is down. Someone removes the Workspace and its Machine by force (finalizers
    # stripped, as `kubectl patch` would): nothing left in the cluster points at the pool.
    for kind, name, namespace in ((WORKSPACE, "workspace-falcon-7b", e2e.namespace), (MACHINE, pool, None)):
        await e2e.kube.patch(kind, name, {"metadata": {"finalizers": None}}, namespace=namespace)
        await e2e.kube.delete(kind, name, namespace)
        await wait_for(e2e.kube, kind, name, lambda obj: obj is None, namespace=namespace)
    assert pool in e2e.simulator.cluster.pools
    async with e2e.operator(settings) as (_, factory):

        async def collected() -> bool | None:
            return True if pool not in e2e.simulator.cluster.pools else None

        await eventually(collected, timeout=30, what="the orphan pool to be garbage-collected")
        assert factory.provisioner is not None and factory.provisioner.gc_controller is not None
        await eventually(_no_nodes(e2e, pool), timeout=30, what="the orphan pool's node to go")


def _no_nodes(e2e: EndToEnd, pool: str) -> Any:
    async def check() -> bool | None:
        return True if not await e2e.nodes_of_pool(pool) else None

    return check
