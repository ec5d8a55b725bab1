"""(f) A template Workspace: the user's pod runs, with our label, affinity and tolerations merged in."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import DEPLOYMENT, NODE, POD, ApiError
from kaito_operator.testing import (
    condition,
    delete_quietly,
    eventually,
    gpu_node,
    is_true,
    plain_client,
    wait_for,
)
from tests.integration.workspace.test_self_healing import POLICY, POLICY_BINDING, _deny_policy, _probe
from tests.integration.workspace.workspace_testkit import delete_workspace_and_wait, machines_of

pytestmark = [pytest.mark.controlplane, pytest.mark.full]

USER_TOLERATION = {"key": "team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}


async def test_the_users_container_runs_with_our_affinity_and_tolerations(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    suffix = uuid.uuid4().hex[:6]
    labels = {"apps": f"custom-{suffix}"}
    node_name = f"aks-custom-{suffix}"
    await client.create(
        NODE,
        gpu_node(
            node_name,
            labels={**labels, "zone": "a"},
            instance_type="Standard_NC6s_v3",
            gpus=1,
            taints=[{"key": "team", "value": "ml", "effect": "NoSchedule"}],
        ),
    )
    template = {
        "metadata": {"labels": {"app": "custom"}},
        "spec": {
            "containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 5000}]}],
            "tolerations": [USER_TOLERATION],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                        ]
                    }
                }
            },
        },
    }
    workspace = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": "custom", "namespace": namespace},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {"matchLabels": labels}},
        "inference": {"template": template},
    }
    try:
        async with running_operator(kube_api):
            await client.create(WORKSPACE, workspace)
            await wait_for(
                client, WORKSPACE, "custom", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90
            )
            [pod] = (await client.list(POD, namespace, label_selector=f"{c.LABEL_WORKSPACE}=custom"))[0]
            spec = pod["spec"]
            assert pod["spec"]["nodeName"] == node_name
            assert [ct["image"] for ct in spec["containers"]] == ["nginx:1.27"]
            assert pod["metadata"]["labels"]["app"] == "custom", "the user's labels are kept"
            tolerations = spec["tolerations"]
            assert USER_TOLERATION in tolerations
            assert {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"} in tolerations
            [term] = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"
            ]
            keys = [e["key"] for e in term["matchExpressions"]]
            assert keys[0] == "zone", "the user's requirement is kept"
            assert "apps" in keys and c.LABEL_INSTANCE_TYPE in keys, "ours are ANDed in"

            # A change of template rolls out.
            current = await client.get(WORKSPACE, "custom", namespace)
            current["inference"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
            await client.patch(WORKSPACE, "custom", {"inference": current["inference"]}, namespace=namespace)
            await wait_for(
                client,
                WORKSPACE,
                "custom",
                lambda obj: (
                    is_true(c.COND_WORKSPACE_READY)(obj)
                    and obj is not None
                    and all(
                        cond.get("observedGeneration") == obj["metadata"]["generation"]
                        for cond in obj["status"]["conditions"]
                    )
                ),
                namespace=namespace,
                timeout=90,
                what="rolled out",
            )
            pods, _ = await client.list(POD, namespace, label_selector=f"{c.LABEL_WORKSPACE}=custom")
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            assert [p["spec"]["containers"][0]["image"] for p in live] == ["nginx:1.28"]
            await delete_workspace_and_wait(client, "custom", namespace)
    finally:
        await delete_quietly(client, NODE, node_name)


async def test_a_template_whose_deployment_a_policy_forbids_is_a_condition_and_no_machine(
    kube_api: Any, namespace: str
) -> None:
    """A 403 (a policy engine, an exhausted quota) on the dry run: a False condition with the server's
    message, no Machine, and a slow look again rather than a backoff loop."""
    client = plain_client(kube_api)
    policy_name = f"deny-{namespace}"
    policy, binding = _deny_policy(policy_name, namespace, "apps", "deployments", "Forbidden")
    await client.create(POLICY, policy)
    await client.create(POLICY_BINDING, binding)
    try:

        async def refused() -> ApiError | None:
            try:
                await client.create(DEPLOYMENT, _probe(DEPLOYMENT, "forbidden", namespace), dry_run=True)
            except ApiError as error:
                return error if error.status == 403 else None
            return None

        expected = (await eventually(refused, timeout=30, what="the policy in force")).api_message
        assert policy_name in expected
        workspace = {
            "apiVersion": "kaito.sh/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "forbidden", "namespace": namespace},
            "resource": {
                "instanceType": "Standard_NC6s_v3",
                "labelSelector": {"matchLabels": {"apps": f"forbidden-{uuid.uuid4().hex[:6]}"}},
            },
            "inference": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
        }
        async with running_operator(kube_api) as operator:
            await client.create(WORKSPACE, workspace)
            failed = await wait_for(
                client, WORKSPACE, "forbidden",
                lambda obj: obj is not None and condition(obj, c.COND_RESOURCE_READY).get("status") == "False",
                namespace=namespace, timeout=60, what="ResourceReady=False",
            )  # fmt: skip
            assert expected in condition(failed, c.COND_RESOURCE_READY)["message"]
            assert condition(failed, c.COND_WORKSPACE_READY)["status"] == "False"
            assert await machines_of(client, namespace) == [], "no GPU node for a Deployment that would be refused"
            metrics = operator.metrics

            async def counted_as_refusal() -> bool | None:
                # Counted when the reconcile returns, which may be after the status write was seen.
                permanent = metrics.registry.get_sample_value(
                    "kaito_reconcile_errors_total", {"controller": "workspace", "kind": "permanent"}
                )
                return True if permanent else None

            await eventually(counted_as_refusal, timeout=30, what="a permanent error, not a retry with backoff")
            await delete_workspace_and_wait(client, "forbidden", namespace)
    finally:
        await delete_quietly(client, POLICY_BINDING, policy_name)
        await delete_quietly(client, POLICY, policy_name)
