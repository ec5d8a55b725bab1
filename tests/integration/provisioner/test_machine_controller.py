"""The Machine controller on the real control plane, with the AKS simulator registering nodes that
kwok keeps Ready: launch, registration, initialization, termination, failures and garbage collection.

Machines are cluster-scoped, so each test isolates itself by the ``kaito.sh/workspacenamespace``
label (its namespace's name) and the provisioner's machine selector.
"""

from __future__ import annotations

import base64
import json
import pickle
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gpu_provisioner.machine import ANNOTATION_OPERATION
from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from gpu_provisioner.setup import MACHINE_CONTROLLER, ProvisionerFactory
from gpu_provisioner.testing import a_machine, fast_provisioner
from kaito.testing import provisioner_operator, reconciled_again, running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import EVENT, NODE, POD, ApiError, KubeClient, ResourceKind
from kaito_operator.testing import (
    condition,
    eventually,
    force_delete,
    force_delete_machines,
    gone,
    has_condition,
    plain_client,
    wait_for,
)
from sandbox.aks_simulator import AksSimulator, Fault, SimulatorConfig
from sandbox.controlplane import ControlPlane

pytestmark = pytest.mark.full

FOREVER = None
TEST_FINALIZER = "kaito.sh/test-holds-the-node"
POD_DISRUPTION_BUDGET = ResourceKind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", namespaced=True)


def unique_name() -> str:
    return f"m{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def kube(kube_api: Any) -> KubeClient:
    return plain_client(kube_api)


@pytest.fixture
async def simulator(control_plane: ControlPlane) -> AsyncIterator[AksSimulator]:
    config = SimulatorConfig(kubeconfig=control_plane.kubeconfig, provisioning_delay_s=0.5, deletion_delay_s=0.2)
    async with AksSimulator(config) as sim:
        yield sim


@dataclass
class Rig:
    """Everything a test here uses: the cluster, the simulator, and this test's label space."""

    api: Any
    kube: KubeClient
    simulator: AksSimulator
    namespace: str
    token_file: Path

    @property
    def selector(self) -> str:
        return f"kaito.sh/workspacenamespace={self.namespace}"

    def operator(self, settings: ProvisionerSettings | None = None, **azure: Any) -> Any:
        return provisioner_operator(
            self.api, self.simulator, self.token_file, settings or fast_provisioner(self.selector), **azure
        )

    async def create_machine(self, name: str, **overrides: Any) -> None:
        await self.kube.create(MACHINE, a_machine(name, namespace_label=self.namespace, **overrides))


@pytest.fixture
def rig(kube_api: Any, kube: KubeClient, simulator: AksSimulator, namespace: str, tmp_path: Path) -> Rig:
    return Rig(kube_api, kube, simulator, namespace, tmp_path / "federated-token")


@pytest.fixture(autouse=True)
async def leave_no_machines(kube: KubeClient, namespace: str) -> AsyncIterator[None]:
    yield
    await force_delete_machines(kube, namespace)


async def warning_events(kube: KubeClient, name: str) -> list[dict[str, Any]]:
    events, _ = await kube.list(EVENT, "default", field_selector=f"involvedObject.name={name}")
    return [e for e in events if e.get("type") == "Warning"]


async def test_a_machine_becomes_a_ready_node_and_leaves_with_its_agent_pool(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    async with rig.operator():
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
        assert machine is not None
        status = machine["status"]
        for step in (c.COND_MACHINE_LAUNCHED, c.COND_MACHINE_REGISTERED, c.COND_MACHINE_INITIALIZED):
            assert condition(machine, step)["status"] == "True"
        assert c.MACHINE_FINALIZER in machine["metadata"]["finalizers"]
        node_name = status["nodeName"]
        assert node_name.startswith(f"aks-{name}-") and node_name.endswith("-vmss000000")
        assert status["providerID"].startswith(
            f"azure:///subscriptions/{simulator.config.subscription_id}/resourceGroups/mc_kaito-rg_kaito-cluster_eastus/"
            f"providers/Microsoft.Compute/virtualMachineScaleSets/aks-{name}-"
        )
        assert status["capacity"]["nvidia.com/gpu"] == "2"  # Standard_NC12s_v3 has two V100s
        assert status["allocatable"]["nvidia.com/gpu"] == "2"

        node = await kube.get(NODE, node_name)
        assert c.MACHINE_FINALIZER in node["metadata"]["finalizers"]
        owner = node["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Machine", name, machine["metadata"]["uid"])
        assert node["metadata"]["labels"]["karpenter.sh/registered"] == "true"
        assert node["metadata"]["labels"]["kaito.sh/workspace"] == "workspace-falcon-7b"
        assert {"key": "sku", "value": "gpu", "effect": "NoSchedule"} in node["spec"]["taints"]

        (put,) = simulator.requests_for("PUT", name)
        assert put.body["properties"]["vmSize"] == "Standard_NC12s_v3"
        assert put.body["properties"]["osDiskSizeGB"] == 120
        assert put.body["properties"]["nodeLabels"]["kaito.sh/machine-type"] == "gpu"
        assert simulator.requests_for("TOKEN")[0].body["client_assertion"] == simulator.config.federated_token

        await kube.delete(MACHINE, name)
        await wait_for(kube, MACHINE, name, gone, what="Machine gone")
        await wait_for(kube, NODE, node_name, gone, what="node gone")
        assert name not in simulator.cluster.pools
        assert [r.status for r in simulator.requests_for("DELETE", name)] == [202]


async def test_quota_exceeded_is_reported_once_and_not_retried_until_the_machine_changes(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.add_fault(Fault.quota_exceeded(times=FOREVER))
    async with rig.operator() as running:
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "False", "LaunchFailed"))
        launched = condition(machine, c.COND_MACHINE_LAUNCHED)
        assert launched["status"] == "False" and launched["reason"] == "LaunchFailed"
        assert launched["message"].startswith(f"QuotaExceeded: creating agent pool {name} failed: QuotaExceeded:")
        assert "exceeding approved standardNCADSA100v4Family Cores quota" in launched["message"]
        assert condition(machine, "Ready")["message"] == launched["message"]

        async def warned() -> list[str] | None:
            reasons = [e["reason"] for e in await warning_events(kube, name)]
            return reasons or None

        assert await eventually(warned, what="a Warning Event") == ["QuotaExceeded"]

        # An unrelated change wakes the controller; the same request is not sent again before the
        # re-check interval.
        before = running.reconciles(MACHINE_CONTROLLER)
        await kube.patch(MACHINE, name, {"metadata": {"annotations": {"touched": "yes"}}})
        await reconciled_again(running.operator, MACHINE_CONTROLLER, before)
        assert len(simulator.requests_for("PUT", name)) == 1

        # A change to what is asked for is a new request: quota raised, the Machine provisions.
        simulator.clear_faults()
        await kube.patch(MACHINE, name, {"spec": {"resources": {"requests": {"storage": "130Gi"}}}})
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready after the change")
        assert [r.status for r in simulator.requests_for("PUT", name)] == [400, 201]
        assert simulator.requests_for("PUT", name)[-1].body["properties"]["osDiskSizeGB"] == 130


async def test_a_raised_quota_recovers_at_the_next_recheck_with_one_put(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.add_fault(Fault.quota_exceeded(times=FOREVER))
    async with rig.operator(fast_provisioner(rig.selector, launch_recheck_interval_s=3)):
        await rig.create_machine(name)
        await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False", "LaunchFailed"))
        simulator.clear_faults()  # the quota is raised; nothing is deleted or changed on our side
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready after the re-check")
    assert [r.status for r in simulator.requests_for("PUT", name)] == [400, 201]


async def test_an_allocation_failure_in_the_operation_is_a_permanent_launch_failure(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.add_fault(Fault.allocation_failed())
    async with rig.operator():
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False"))
        assert condition(machine, c.COND_MACHINE_LAUNCHED)["message"].startswith("InsufficientCapacity: ")
        assert "AllocationFailed" in condition(machine, "Ready")["message"]
        assert len(simulator.requests_for("PUT", name)) == 1


async def test_a_machine_name_that_cannot_be_a_pool_fails_without_calling_azure(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = f"ws-{uuid.uuid4().hex[:6]}"
    async with rig.operator():
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False", "LaunchFailed"))
        assert "cannot be an AKS agent pool name" in condition(machine, "Ready")["message"]
        await kube.delete(MACHINE, name)
        await wait_for(kube, MACHINE, name, gone, what="the Machine to be released")
    assert not simulator.requests_for("PUT", name) and not simulator.requests_for("DELETE", name)


async def test_throttling_and_a_server_error_are_retried_honouring_retry_after(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.add_fault(Fault.throttle("PUT", retry_after=1))
    simulator.add_fault(Fault.server_error("PUT"))
    async with rig.operator():
        await rig.create_machine(name)
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    puts = simulator.requests_for("PUT", name)
    assert [r.status for r in puts] == [429, 500, 201]
    assert puts[1].time - puts[0].time >= 1.0, "the retry waited for Retry-After"


async def test_a_restarted_operator_resumes_the_create_instead_of_sending_another(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.config.provisioning_delay_s = 4
    settings = fast_provisioner(rig.selector)
    async with rig.operator(settings):
        await rig.create_machine(name)
        machine = await wait_for(
            kube,
            MACHINE,
            name,
            lambda m: ANNOTATION_OPERATION in ((m or {}).get("metadata") or {}).get("annotations", {}),
        )
        assert machine is not None
        assert json.loads(machine["metadata"]["annotations"][ANNOTATION_OPERATION])["kind"] == "create"
    assert not simulator.cluster.operations[simulator.cluster.pools[name].operation_id or ""].finished
    async with rig.operator(settings):
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    assert len(simulator.requests_for("PUT", name)) == 1
    assert ANNOTATION_OPERATION not in machine["metadata"].get("annotations", {})  # type: ignore[index]


async def test_a_vanished_node_makes_the_machine_not_ready(rig: Rig) -> None:
    kube = rig.kube
    name = unique_name()
    async with rig.operator():
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "True"))
        assert machine is not None
        node = machine["status"]["nodeName"]
        # Delete first, then strip the finalizers: the API server refuses new finalizers on an object
        # being deleted, so the provisioner cannot claim the node again in between (stripping first
        # raced with that claim, and the node stayed).
        await kube.delete(NODE, node)
        try:
            await kube.patch(NODE, node, {"metadata": {"finalizers": None}})
        except ApiError as error:
            if not error.not_found:  # gone already: it had no finalizer left
                raise
        await wait_for(kube, NODE, node, gone, what="the node gone")
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "False", "NodeNotFound"))
        assert machine["status"]["nodeName"] in condition(machine, "Ready")["message"]  # type: ignore[index]


async def test_the_garbage_collector_deletes_our_pools_that_have_no_machine(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    orphan, foreign = unique_name(), unique_name()
    body = {"properties": {"vmSize": "Standard_NC6s_v3", "nodeLabels": {"kaito.sh/workspacenamespace": rig.namespace}}}
    simulator.cluster.put(
        orphan,
        {
            "properties": {
                **body["properties"],
                "tags": {"kaito-py-cluster": "kaito-cluster", "kaito-py-machine": orphan},
            }
        },
    )
    simulator.cluster.put(foreign, body)  # a pool the user made: no tags of ours
    settings = fast_provisioner(rig.selector, gc_interval_s=0.5, gc_grace_period_s=1)
    async with rig.operator(settings):

        async def orphan_gone() -> bool | None:
            return True if orphan not in simulator.cluster.pools else None

        await eventually(orphan_gone, timeout=30, what="the orphan pool to be collected")
    assert foreign in simulator.cluster.pools
    for node in (await kube.list(NODE, label_selector=f"{c.LABEL_AKS_AGENTPOOL}={foreign}"))[0]:
        await force_delete(kube, NODE, node["metadata"]["name"])


async def test_a_wrong_client_id_is_a_clear_machine_condition(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    wrong = "11111111-2222-3333-4444-555555555555"
    async with rig.operator(AZURE_CLIENT_ID=wrong):
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False", "LaunchFailed"))
        message = condition(machine, "Ready")["message"]
        assert "Entra ID refused the workload identity" in message
        assert "AADSTS700016" in message and wrong in message
    assert not simulator.requests_for("PUT")


async def test_missing_identity_configuration_is_reported_on_machines_not_by_crashing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = rig.kube
    for variable in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(variable, raising=False)
    name = unique_name()
    azure = AzureSettings(subscription_id="s", resource_group="rg", cluster_name="c")
    factory = ProvisionerFactory(azure=azure, settings=fast_provisioner(rig.selector))
    async with running_operator(rig.api, [factory]):
        assert factory.provisioner is not None and factory.provisioner.problem is not None
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False"))
        message = condition(machine, "Ready")["message"]
        assert "missing environment variables: AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE" in message
        assert "scripts/setup-identity.sh" in message


def test_settings_used_here_keep_polling_fast() -> None:
    assert fast_provisioner("a=b").poll_interval_s < ProvisionerSettings().poll_interval_s


async def test_a_create_already_running_without_our_token_is_waited_for_not_repeated(rig: Rig) -> None:
    """The pool exists and is Creating (a create whose token was lost with a crashed operator):
    the controller finds it and waits, rather than sending a PUT that AKS would refuse (409)."""
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.config.provisioning_delay_s = 3
    properties = {
        "vmSize": "Standard_NC12s_v3",
        "nodeLabels": {"kaito.sh/workspace": "workspace-falcon-7b", "kaito.sh/workspacenamespace": rig.namespace},
        "tags": {"kaito-py-cluster": "kaito-cluster", "kaito-py-machine": name},
    }
    simulator.cluster.put(name, {"properties": properties})
    await rig.create_machine(name)  # before the operator starts, as after a crash
    async with rig.operator():
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "Unknown", "Launching"))
        assert "Creating" in condition(machine, c.COND_MACHINE_LAUNCHED)["message"]
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    assert not simulator.requests_for("PUT", name), "no PUT: the running create was awaited"


# A continuation token of an older azure-core (a pickle), as a Machine annotated before an SDK upgrade
# would hold: the new SDK refuses to read it.
PRE_UPGRADE_TOKEN = base64.b64encode(pickle.dumps({"initial_response": "..."})).decode()


async def test_a_create_token_the_sdk_cannot_read_is_forgotten_not_a_permanent_failure(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    token = json.dumps({"kind": "create", "token": PRE_UPGRADE_TOKEN})
    await rig.create_machine(name, annotations={ANNOTATION_OPERATION: token})
    async with rig.operator():
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    assert [r.status for r in simulator.requests_for("PUT", name)] == [201]
    assert ANNOTATION_OPERATION not in machine["metadata"].get("annotations", {})  # type: ignore[index]


async def test_a_delete_token_the_sdk_cannot_read_is_forgotten_and_the_pool_still_deleted(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    async with rig.operator():
        await rig.create_machine(name)
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    token = json.dumps({"kind": "delete", "token": PRE_UPGRADE_TOKEN})
    await kube.patch(MACHINE, name, {"metadata": {"annotations": {ANNOTATION_OPERATION: token}}})
    await kube.delete(MACHINE, name)  # our finalizer holds it until the pool is gone
    async with rig.operator():
        await wait_for(kube, MACHINE, name, gone, what="Machine gone")
    assert name not in simulator.cluster.pools
    assert [r.status for r in simulator.requests_for("DELETE", name)] == [202]


async def test_a_user_pool_named_like_the_machine_is_untouched_and_the_machine_says_why(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    simulator.cluster.put(name, {"properties": {"vmSize": "Standard_D4s_v3", "nodeLabels": {"team": "mine"}}})
    await eventually(lambda: _ready_pool(simulator, name), what="the user's pool and node")
    (user_node,) = (await kube.list(NODE, label_selector=f"{c.LABEL_AKS_AGENTPOOL}={name}"))[0]
    async with rig.operator() as running:
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition(c.COND_MACHINE_LAUNCHED, "False"))
        launched = condition(machine, c.COND_MACHINE_LAUNCHED)
        assert launched["reason"] == "AgentPoolNotOwned"
        assert f"agent pool {name} exists and was not created by kaito" in launched["message"]

        async def warned() -> bool | None:
            return True if "AgentPoolNotOwned" in [e["reason"] for e in await warning_events(kube, name)] else None

        await eventually(warned, what="a Warning Event AgentPoolNotOwned")
        # An older version claimed the user's node for the Machine: our finalizer, an owner reference.
        claim = {
            "metadata": {
                "finalizers": [c.MACHINE_FINALIZER],
                "ownerReferences": [
                    {"apiVersion": MACHINE.api_version, "kind": MACHINE.kind, "name": name, "uid": machine_uid(machine)}
                ],
            }
        }
        await kube.patch(NODE, user_node["metadata"]["name"], claim, patch_type="strategic")

        async def claim_seen() -> bool | None:
            nodes = running.machines.registration.nodes_of(name)
            return True if nodes and nodes[0]["metadata"].get("ownerReferences") else None

        await eventually(claim_seen, what="the provisioner's node cache holds the claim")
        await kube.delete(MACHINE, name)
        await wait_for(kube, MACHINE, name, gone, what="the Machine released")
    assert not simulator.requests_for("PUT", name) and not simulator.requests_for("DELETE", name)
    assert simulator.cluster.pools[name].properties.get("tags") is None
    node = await kube.get(NODE, user_node["metadata"]["name"])
    assert not node["spec"].get("unschedulable") and not node["metadata"].get("deletionTimestamp")
    assert c.MACHINE_FINALIZER not in (node["metadata"].get("finalizers") or [])
    assert not node["metadata"].get("ownerReferences"), "the owner reference to the Machine is taken off"
    await force_delete(kube, NODE, node["metadata"]["name"])


def machine_uid(machine: dict[str, Any] | None) -> str:
    assert machine is not None
    return str(machine["metadata"]["uid"])


async def _ready_pool(simulator: AksSimulator, name: str) -> bool | None:
    pool = simulator.cluster.pools.get(name)
    return True if pool is not None and pool.provisioning_state == "Succeeded" else None


async def test_a_wrong_resource_group_is_a_clear_condition_and_keeps_the_finalizer(rig: Rig) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    async with rig.operator():
        await rig.create_machine(name)
        await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
    async with rig.operator(ARM_RESOURCE_GROUP="wrong-rg") as running:
        machine = await wait_for(kube, MACHINE, name, has_condition("CloudProviderConfigured", "False"))
        message = condition(machine, "CloudProviderConfigured")["message"]
        assert "ResourceGroupNotFound" in message and "ARM_RESOURCE_GROUP" in message
        assert running.factory.provisioner is not None and running.factory.provisioner.check is not None
        assert "ResourceGroupNotFound" in (running.operator.readiness_problems() or [""])[-1]
        async with aiohttp.ClientSession() as http:
            readyz = f"http://127.0.0.1:{running.operator.health_port}/readyz"
            async with http.get(readyz) as response:
                assert response.status == 503 and "ResourceGroupNotFound" in await response.text()
            async with http.get(readyz, params={"exclude": "azure-configuration"}) as response:
                assert response.status == 200, await response.text()
        before = running.reconciles(MACHINE_CONTROLLER)
        await kube.delete(MACHINE, name)
        await reconciled_again(running.operator, MACHINE_CONTROLLER, before)
        machine = await kube.get(MACHINE, name)
        assert c.MACHINE_FINALIZER in machine["metadata"]["finalizers"]
    assert name in simulator.cluster.pools
    async with rig.operator():  # the setting fixed: the deletion completes
        await wait_for(kube, MACHINE, name, gone, what="Machine gone")
    assert name not in simulator.cluster.pools


async def test_a_node_with_a_pod_is_drained_before_it_is_deleted(rig: Rig, namespace: str) -> None:
    kube, simulator = rig.kube, rig.simulator
    name = unique_name()
    async with rig.operator() as running:
        await rig.create_machine(name)
        machine = await wait_for(kube, MACHINE, name, has_condition("Ready", "True"), what="Machine Ready")
        node_name = machine["status"]["nodeName"]  # type: ignore[index]
        # The test's own finalizer keeps a deleted node visible, so the controller-manager's pod GC
        # (which deletes the pods of a node that is gone) cannot take the pod: only an eviction can.
        await kube.patch(NODE, node_name, {"metadata": {"finalizers": [TEST_FINALIZER]}}, patch_type="strategic")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "inference", "namespace": namespace, "labels": {"app": "inference"}},
            "spec": {
                "nodeName": node_name,
                "tolerations": [{"operator": "Exists"}],
                "containers": [{"name": "c", "image": "registry.invalid/none"}],
            },
        }
        await kube.create(POD, pod)
        pdb = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "inference", "namespace": namespace},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "inference"}}},
        }
        await kube.create(POD_DISRUPTION_BUDGET, pdb)
        await kube.delete(MACHINE, name)
        await wait_for(kube, NODE, node_name, lambda n: bool(n and n["spec"].get("unschedulable")), what="cordoned")

        async def drain_blocked() -> bool | None:
            events, _ = await kube.list(EVENT, "default", field_selector=f"involvedObject.name={name}")
            return True if "DrainBlocked" in [e["reason"] for e in events] else None

        await eventually(drain_blocked, timeout=30, what="a DrainBlocked Event")
        before = running.reconciles(MACHINE_CONTROLLER)
        await reconciled_again(running.operator, MACHINE_CONTROLLER, before)  # another blocked pass
        node = await kube.get(NODE, node_name)
        assert not node["metadata"].get("deletionTimestamp"), "the node stays while the PDB forbids the eviction"
        assert (await kube.get(MACHINE, name))["metadata"].get("deletionTimestamp"), "the Machine stays too"
        assert not (await kube.get(POD, "inference", namespace))["metadata"].get("deletionTimestamp")
        assert not simulator.requests_for("DELETE", name)

        await kube.delete(POD_DISRUPTION_BUDGET, "inference", namespace)
        await wait_for(kube, POD, "inference", gone, namespace=namespace, what="the pod evicted", timeout=60)
        await wait_for(
            kube, NODE, node_name, lambda n: bool(n and n["metadata"].get("deletionTimestamp")), what="node deleted"
        )
        await force_delete(kube, NODE, node_name)
        await wait_for(kube, MACHINE, name, gone, what="Machine gone")
    assert [r.status for r in simulator.requests_for("DELETE", name)] == [202]


async def test_a_machine_deleted_mid_create_leaves_no_pool_and_an_empty_operations_memory(rig: Rig) -> None:
    kube = rig.kube
    name = unique_name()
    async with AksSimulator(SimulatorConfig(provisioning_delay_s=5, deletion_delay_s=0.1)) as slow:
        async with provisioner_operator(rig.api, slow, rig.token_file, fast_provisioner(rig.selector)) as running:
            await rig.create_machine(name)

            def creating(machine: dict[str, Any] | None) -> bool:
                raw = ((machine or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_OPERATION)
                return isinstance(raw, str) and json.loads(raw).get("kind") == "create"

            await wait_for(kube, MACHINE, name, creating, what="the create running")
            assert len(running.machines.operations) == 1, "the running create is remembered by UID"
            await kube.delete(MACHINE, name)
            await wait_for(kube, MACHINE, name, gone, what="the Machine released", timeout=60)
            assert len(running.machines.operations) == 0, "the per-UID memory is empty once the Machine is gone"
        assert name not in slow.cluster.pools, "its pool went with it"


async def test_a_node_that_never_registers_gets_its_machine_deleted(rig: Rig, control_plane: ControlPlane) -> None:
    kube = rig.kube
    name = unique_name()
    async with AksSimulator(SimulatorConfig(provisioning_delay_s=0.2, deletion_delay_s=0.1)) as no_nodes:
        settings = fast_provisioner(rig.selector, registration_timeout_s=1)
        async with provisioner_operator(rig.api, no_nodes, rig.token_file, settings):
            await rig.create_machine(name)
            await wait_for(kube, MACHINE, name, gone, what="the Machine deleted after the timeout", timeout=60)
        assert "RegistrationTimeout" in [e["reason"] for e in await warning_events(kube, name)]
        assert name not in no_nodes.cluster.pools, "its pool went with it"
