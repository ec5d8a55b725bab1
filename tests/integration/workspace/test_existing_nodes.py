"""(a) A Workspace on existing GPU nodes becomes ready: the falcon-7b example, end to end."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import DEPLOYMENT, EVENT, NODE, POD, SERVICE
from kaito_operator.testing import (
    INSTANCE_TYPE,
    condition,
    delete_quietly,
    gpu_node,
    is_true,
    plain_client,
    wait_for,
    wait_for_item,
)
from tests.integration.workspace.workspace_testkit import (
    delete_workspace_and_wait,
    example_workspace,
    preset_workspace,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


async def test_falcon_7b_example_becomes_ready_on_existing_aks_gpu_nodes(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    apps = f"falcon-7b-{uuid.uuid4().hex[:6]}"
    node_name = f"aks-gpu-{apps}"
    await client.create(NODE, gpu_node(node_name, labels={"apps": apps}))
    try:
        async with running_operator(kube_api) as operator:
            workspace = example_workspace(
                "kaito_workspace_falcon_7b.yaml", name="workspace-falcon-7b", namespace=namespace, labels={"apps": apps}
            )
            await client.create(WORKSPACE, workspace)
            ready = await wait_for(
                client,
                WORKSPACE,
                "workspace-falcon-7b",
                is_true(c.COND_WORKSPACE_READY),
                namespace=namespace,
                timeout=90,
                what="WorkspaceReady=True",
            )
            assert ready is not None
            for kind in (c.COND_MACHINE_READY, c.COND_RESOURCE_READY, c.COND_INFERENCE_READY):
                assert condition(ready, kind)["status"] == "True", condition(ready, kind)
                assert condition(ready, kind)["observedGeneration"] == ready["metadata"]["generation"]
            assert condition(ready, c.COND_RESOURCE_READY)["reason"] == "workspaceResourceStatusSuccess"
            assert condition(ready, c.COND_WORKSPACE_READY)["message"] == "workspace is ready"
            assert ready["status"]["workerNodes"] == [node_name]
            assert c.WORKSPACE_FINALIZER in ready["metadata"]["finalizers"]

            pods, _ = await client.list(POD, namespace, label_selector=f"{c.LABEL_WORKSPACE}=workspace-falcon-7b")
            assert [p["spec"]["nodeName"] for p in pods] == [node_name]
            assert pods[0]["status"]["phase"] == "Running"
            container = pods[0]["spec"]["containers"][0]
            assert container["command"][0] == "text-generation-launcher"
            assert container["resources"]["limits"][c.GPU_RESOURCE] == "1"

            service = await client.get(SERVICE, "workspace-falcon-7b", namespace)
            assert service["spec"]["type"] == "LoadBalancer"  # the example sets kaito.sh/enablelb: "True"
            # ... and names no API key: the operator warns that the endpoint is open to anyone.
            warning = await wait_for_item(
                client,
                EVENT,
                namespace,
                lambda e: e["type"] == "Warning" and e["reason"] == "PublicEndpointWithoutAPIKey",
                field_selector="involvedObject.name=workspace-falcon-7b",
            )
            assert c.ANNOTATION_API_KEY_SECRET in warning["message"]
            assert service["spec"]["selector"] == {c.LABEL_WORKSPACE: "workspace-falcon-7b"}
            [port] = service["spec"]["ports"]
            assert (port["name"], port["port"], port["targetPort"]) == ("http", 80, 5000)

            deployment = await client.get(DEPLOYMENT, "workspace-falcon-7b", namespace)
            [owner] = deployment["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["controller"], owner["blockOwnerDeletion"]) == ("Workspace", True, True)
            machines, _ = await client.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
            assert machines == [], "existing nodes sufficed; nothing was provisioned"
            assert INSTANCE_TYPE in str(deployment["spec"]["template"]["spec"]["affinity"])

            # The process's endpoints.
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{operator.health_port}"
                async with http.get(f"{base}/readyz") as response:
                    assert response.status == 200
                async with http.get(f"{base}/healthz") as response:
                    assert response.status == 200
                async with http.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as response:
                    text = await response.text()
                for name in (
                    "kaito_api_requests_total",
                    "kaito_reconcile_total",
                    "kaito_reconcile_duration_seconds_bucket",
                    "kaito_reconcile_errors_total",
                    "kaito_workqueue_depth",
                ):
                    assert f"\n{name}" in text or f"# TYPE {name.removesuffix('_bucket')}" in text, name
            by_verb = operator.metrics.api_requests_by_verb()
            assert by_verb["apply"] >= 2 and by_verb["list"] >= 5 and by_verb["watch"] >= 5, by_verb

            # Someone deletes the Service: it is put back.
            old_uid = service["metadata"]["uid"]
            await client.delete(SERVICE, "workspace-falcon-7b", namespace)
            await wait_for(
                client,
                SERVICE,
                "workspace-falcon-7b",
                lambda obj: obj is not None and obj["metadata"]["uid"] != old_uid,
                namespace=namespace,
                timeout=30,
                what="the Service to be recreated",
            )
            await delete_workspace_and_wait(client, "workspace-falcon-7b", namespace)
    finally:
        await delete_quietly(client, NODE, node_name)


async def test_a_served_workspace_over_a_lowered_count_limit_is_warned_about_and_kept(
    kube_api: Any, namespace: str
) -> None:
    """KAITO_MAX_WORKSPACE_COUNT lowered under a Workspace already served: the creation rule is not
    applied again (it would fail the Workspace while its nodes stay billed); a Warning says so."""
    client = plain_client(kube_api)
    apps = f"lowered-{uuid.uuid4().hex[:6]}"
    nodes = [f"aks-low-{apps}-{i}" for i in range(2)]
    for node in nodes:
        await client.create(NODE, gpu_node(node, labels={"apps": apps}))
    try:
        async with running_operator(kube_api, max_workspace_count=2):
            await client.create(
                WORKSPACE, preset_workspace(name="lowered", namespace=namespace, labels={"apps": apps}, count=2)
            )
            await wait_for(
                client, WORKSPACE, "lowered", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90
            )
        async with running_operator(kube_api, max_workspace_count=1):
            warning = await wait_for_item(
                client,
                EVENT,
                namespace,
                lambda e: e["type"] == "Warning" and e["reason"] == "NoLongerAdmissible",
                field_selector="involvedObject.name=lowered",
            )
            assert "resource.count" in warning["message"]
            # Drift repair goes on: a scaled-down Deployment is put back.
            await client.patch(DEPLOYMENT, "lowered", {"spec": {"replicas": 1}}, namespace=namespace)
            await wait_for(
                client, DEPLOYMENT, "lowered", lambda d: d is not None and d["spec"]["replicas"] == 2,
                namespace=namespace, timeout=60, what="the replicas put back",
            )  # fmt: skip
            kept = await client.get(WORKSPACE, "lowered", namespace)
            assert condition(kept, c.COND_RESOURCE_READY)["status"] == "True"
            assert sorted(kept["status"]["workerNodes"]) == nodes
            await delete_workspace_and_wait(client, "lowered", namespace)
    finally:
        for node in nodes:
            await delete_quietly(client, NODE, node)
