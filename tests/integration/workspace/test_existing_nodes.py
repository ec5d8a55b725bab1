"""(a) A Workspace on existing GPU nodes becomes ready: the falcon-7b example, end to end."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from workspace_testkit import (
    INSTANCE_TYPE,
    condition,
    delete_quietly,
    example_workspace,
    gpu_node,
    is_true,
    plain_client,
    running_operator,
    wait_for,
)

from kaito_operator.api import constants as c
from kaito_operator.runtime import DEPLOYMENT, MACHINE, NODE, POD, SERVICE, WORKSPACE

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


async def test_falcon_7b_example_becomes_ready_on_existing_aks_gpu_nodes(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    apps = f"falcon-7b-{uuid.uuid4().hex[:6]}"
    node_name = f"aks-gpu-{apps}"
    await client.create(NODE, gpu_node(node_name, labels={"apps": apps}))
    try:
        async with running_operator(kube_api):
            workspace = example_workspace(
                "kaito_workspace_falcon_7b.yaml", name="workspace-falcon-7b", namespace=namespace, labels={"apps": apps}
            )
            await client.create(WORKSPACE, workspace)
            ready = await wait_for(
                client,
                WORKSPACE,
                "workspace-falcon-7b",
                namespace,
                is_true(c.COND_WORKSPACE_READY),
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
            assert service["spec"]["selector"] == {c.LABEL_WORKSPACE: "workspace-falcon-7b"}
            [port] = service["spec"]["ports"]
            assert (port["name"], port["port"], port["targetPort"]) == ("http", 80, 5000)

            deployment = await client.get(DEPLOYMENT, "workspace-falcon-7b", namespace)
            [owner] = deployment["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["controller"], owner["blockOwnerDeletion"]) == ("Workspace", True, True)
            machines, _ = await client.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
            assert machines == [], "existing nodes sufficed; nothing was provisioned"
            assert INSTANCE_TYPE in str(deployment["spec"]["template"]["spec"]["affinity"])
    finally:
        await delete_quietly(client, NODE, node_name)
