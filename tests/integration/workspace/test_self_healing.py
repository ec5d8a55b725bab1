"""The Workspace controller heals what others changed: a deleted Machine is replaced, drift in the
Deployment and Service is put back (and only drift), and a write the API server refuses becomes a
condition instead of a retry loop. All against the real control plane.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kaito.operator import DEFAULT_CONTROLLERS
from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import DEPLOYMENT, NODE, SERVICE, ApiError, ResourceKind, RuntimeMetrics
from kaito_operator.runtime.drift import find_drift, restore_patch
from kaito_operator.testing import (
    condition,
    delete_quietly,
    eventually,
    force_delete_machines,
    gpu_node,
    has_condition,
    is_true,
    plain_client,
    wait_for,
)
from tests.integration.workspace.workspace_testkit import (
    StandInProvisioner,
    delete_workspace_and_wait,
    machines_of,
    preset_workspace,
)

pytestmark = [pytest.mark.controlplane, pytest.mark.full]

POLICY = ResourceKind(
    "admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy", "validatingadmissionpolicies", namespaced=False
)
POLICY_BINDING = ResourceKind(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingAdmissionPolicyBinding",
    "validatingadmissionpolicybindings",
    namespaced=False,
)


def _labels() -> dict[str, str]:
    return {"apps": f"llm-{uuid.uuid4().hex[:6]}"}


def _sample(metrics: RuntimeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def _writes(metrics: RuntimeMetrics, resource: str) -> float:
    """Successful writes (apply or patch) the operator made to ``resource`` itself (not a subresource)."""
    group = {"deployments": "apps", "services": ""}[resource]
    return sum(
        _sample(
            metrics, "kaito_api_requests_total", verb=verb, group=group, resource=resource, subresource="", code="200"
        )
        for verb in ("apply", "patch")
    )


async def _counted(metrics: RuntimeMetrics, **at_least: float) -> bool | None:
    """True once the operator has counted at least ``at_least[resource]`` successful writes of each."""
    return True if all(_writes(metrics, resource) >= n for resource, n in at_least.items()) else None


async def test_a_deleted_machine_is_replaced_and_the_workspace_is_ready_again(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    provisioner = StandInProvisioner(namespace)
    try:
        async with running_operator(kube_api, [*DEFAULT_CONTROLLERS, provisioner.factory]):
            await client.create(WORKSPACE, preset_workspace(name="heal", namespace=namespace, labels=_labels()))
            ready = await wait_for(
                client, WORKSPACE, "heal", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90
            )
            assert ready is not None
            [first] = await machines_of(client, namespace)
            old = first["metadata"]["name"]
            assert ready["status"]["workerNodes"] == [first["status"]["nodeName"]]

            # Deleted by someone else (a user, a provisioner's liveness timeout): the stand-in holds
            # it with its finalizer while it removes the node, as a provisioner does.
            await client.delete(MACHINE, old)
            healed = await wait_for(
                client,
                WORKSPACE,
                "heal",
                lambda ws: (
                    is_true(c.COND_WORKSPACE_READY)(ws)
                    and old not in (nodes := ((ws or {}).get("status") or {}).get("workerNodes") or [old])
                    and bool(nodes)
                ),
                namespace=namespace,
                timeout=90,
                what="ready again on a new node",
            )
            assert healed is not None
            [replacement] = await machines_of(client, namespace)  # the old one is gone, only one was made
            new = replacement["metadata"]["name"]
            assert new != old
            assert healed["status"]["workerNodes"] == [replacement["status"]["nodeName"]]
            await delete_workspace_and_wait(client, "heal", namespace)
    finally:
        await force_delete_machines(client, namespace)
        await provisioner.cleanup(client)


async def test_drift_is_put_back_and_fields_we_do_not_own_cause_no_write(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    labels = _labels()
    node = f"aks-drift-{labels['apps']}"
    await client.create(NODE, gpu_node(node, labels=labels))
    try:
        async with running_operator(kube_api) as operator:
            workspace = preset_workspace(name="drift", namespace=namespace, labels=labels)
            await client.create(WORKSPACE, workspace)
            await wait_for(client, WORKSPACE, "drift", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90)
            count = workspace["resource"]["count"]
            service = await client.get(SERVICE, "drift", namespace)
            port = service["spec"]["ports"][0]["port"]

            # kubectl scale: a write to the scale subresource by another field manager.
            await client.patch(
                DEPLOYMENT, "drift", {"spec": {"replicas": 0}}, namespace=namespace, subresource="scale",
                field_manager="kubectl",
            )  # fmt: skip
            await wait_for(
                client, DEPLOYMENT, "drift", lambda d: d is not None and d["spec"]["replicas"] == count,
                namespace=namespace, what=f"replicas back to the Workspace's {count}",
            )  # fmt: skip

            # kubectl edit of the Service's port: the port element now belongs to the editor.
            await client.patch(
                SERVICE, "drift", [{"op": "replace", "path": "/spec/ports/0/port", "value": port + 8000}],
                namespace=namespace, patch_type="json", field_manager="kubectl-edit",
            )  # fmt: skip
            restored = await wait_for(
                client, SERVICE, "drift", lambda s: s is not None and [p["port"] for p in s["spec"]["ports"]] == [port],
                namespace=namespace, what=f"the Service's port back to {port}",
            )  # fmt: skip
            assert restored is not None
            assert [p["name"] for p in restored["spec"]["ports"]] == [p["name"] for p in service["spec"]["ports"]]

            # A user's annotation is not ours: no write. The operator counts a write once its answer
            # arrived, which may be after the test saw the change: wait for the count.
            metrics = operator.metrics
            await eventually(lambda: _counted(metrics, deployments=1, services=1), what="the repairs counted")
            deployments, services = _writes(metrics, "deployments"), _writes(metrics, "services")
            for kind in (DEPLOYMENT, SERVICE):
                await client.patch(
                    kind, "drift", {"metadata": {"annotations": {"team": "search"}}}, namespace=namespace,
                    field_manager="kubectl-annotate",
                )  # fmt: skip
            # Witnesses: each repair is made by a reconcile that runs after the events before it, and
            # writes the Service before the Deployment.
            await client.patch(
                DEPLOYMENT, "drift", {"spec": {"replicas": 0}}, namespace=namespace, subresource="scale",
                field_manager="kubectl",
            )  # fmt: skip
            await wait_for(
                client, DEPLOYMENT, "drift", lambda d: d is not None and d["spec"]["replicas"] == count,
                namespace=namespace, what="replicas repaired again",
            )  # fmt: skip
            await eventually(lambda: _counted(metrics, deployments=deployments + 1), what="the repair counted")
            assert _writes(metrics, "services") == services, "the Service's annotation cost no write"
            await client.patch(
                SERVICE, "drift", [{"op": "replace", "path": "/spec/ports/0/port", "value": port + 1}],
                namespace=namespace, patch_type="json", field_manager="kubectl-edit",
            )  # fmt: skip
            await wait_for(
                client, SERVICE, "drift", lambda s: s is not None and [p["port"] for p in s["spec"]["ports"]] == [port],
                namespace=namespace, what="the port repaired again",
            )  # fmt: skip
            await eventually(lambda: _counted(metrics, services=services + 1), what="the port's repair counted")
            assert _writes(metrics, "deployments") == deployments + 1, "only the scale's repair"
            for kind in (DEPLOYMENT, SERVICE):
                live = await client.get(kind, "drift", namespace)
                assert live["metadata"]["annotations"]["team"] == "search", f"{kind.kind}: not ours, left alone"
            await wait_for(client, WORKSPACE, "drift", is_true(c.COND_WORKSPACE_READY), namespace=namespace, timeout=90)
            await delete_workspace_and_wait(client, "drift", namespace)
    finally:
        await delete_quietly(client, NODE, node)


def _deny_policy(name: str, namespace: str, group: str, resource: str, reason: str) -> tuple[dict[str, Any], ...]:
    """A ValidatingAdmissionPolicy (CEL, run by the API server itself) refusing ``resource`` objects
    that carry the workspace label in ``namespace``, answering with ``reason``."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [group],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [resource],
                    }
                ]
            },
            "validations": [
                {
                    "expression": f"!has(object.metadata.labels) || !('{c.LABEL_WORKSPACE}' in object.metadata.labels)",
                    "message": f"{resource} of workspaces are not allowed here (policy {name})",
                    "reason": reason,
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}},
        },
    }
    return policy, binding


def _probe(kind: ResourceKind, name: str, namespace: str) -> dict[str, Any]:
    """An object like the operator's (same name, the workspace label) for a dry-run create."""
    labels = {c.LABEL_WORKSPACE: name}
    if kind == SERVICE:
        spec: dict[str, Any] = {"selector": labels, "ports": [{"port": 80}]}
    else:
        pod = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "x", "image": "x"}]}}
        spec = {"selector": {"matchLabels": labels}, "template": pod}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta, "spec": spec}


@pytest.mark.parametrize(
    ("kind", "reason", "status"),
    [(DEPLOYMENT, "Forbidden", 403), (SERVICE, "Invalid", 422)],
    ids=["deployment-403", "service-422"],
)
async def test_a_refused_write_is_a_condition_with_the_servers_message_not_a_retry_loop(
    kube_api: Any, namespace: str, kind: ResourceKind, reason: str, status: int
) -> None:
    client = plain_client(kube_api)
    labels = _labels()
    node = f"aksref{labels['apps'].replace('-', '')}"  # agent-pool label: name[:12], no trailing dash
    policy_name = f"deny-{namespace}"
    policy, binding = _deny_policy(policy_name, namespace, kind.group, kind.plural, reason)
    await client.create(NODE, gpu_node(node, labels=labels))
    await client.create(POLICY, policy)
    await client.create(POLICY_BINDING, binding)
    try:
        # The API server loads policies asynchronously: wait until it refuses a dry run, and keep its
        # answer: the message the Workspace must show.
        async def refused() -> ApiError | None:
            try:
                await client.create(kind, _probe(kind, "refused", namespace), dry_run=True)
            except ApiError as error:
                return error if error.status == status else None
            return None

        expected = (await eventually(refused, timeout=30, what="the policy in force")).api_message
        assert policy_name in expected

        async with running_operator(kube_api) as operator:
            await client.create(WORKSPACE, preset_workspace(name="refused", namespace=namespace, labels=labels))
            failed = await wait_for(
                client, WORKSPACE, "refused", has_condition(c.COND_INFERENCE_READY, "False"),
                namespace=namespace, timeout=60, what="InferenceReady=False",
            )  # fmt: skip
            assert expected in condition(failed, c.COND_INFERENCE_READY)["message"]
            assert condition(failed, c.COND_WORKSPACE_READY)["status"] == "False"

            # A harmless change brings the key back once; the refusal must neither have been nor be
            # retried with backoff.
            metrics = operator.metrics
            reconciles = sum(
                _sample(metrics, "kaito_reconcile_total", controller="workspace", result=result)
                for result in ("success", "requeue", "error", "permanent_error")
            )
            permanent = _sample(metrics, "kaito_reconcile_errors_total", controller="workspace", kind="permanent")
            # Counted from here: a write conflict while the Workspace was being set up is retried with
            # backoff as it should be, and is not what this test is about.
            retries = _sample(metrics, "kaito_workqueue_retries_total", controller="workspace")
            errors_total = "kaito_reconcile_errors_total"
            other_errors = {
                kind_of_error: _sample(metrics, errors_total, controller="workspace", kind=kind_of_error)
                for kind_of_error in ("transient", "unexpected")
            }
            touch = {"metadata": {"annotations": {"touched": "1"}}}
            await client.patch(WORKSPACE, "refused", touch, namespace=namespace)

            async def reconciled_again() -> bool | None:
                now = _sample(metrics, "kaito_reconcile_errors_total", controller="workspace", kind="permanent")
                return True if now > permanent else None

            await eventually(reconciled_again, timeout=30, what="a reconcile of the touched Workspace")
            assert _sample(metrics, "kaito_workqueue_retries_total", controller="workspace") == retries
            for kind_of_error, before in other_errors.items():
                now = _sample(metrics, errors_total, controller="workspace", kind=kind_of_error)
                assert now == before, kind_of_error
            after = sum(
                _sample(metrics, "kaito_reconcile_total", controller="workspace", result=result)
                for result in ("success", "requeue", "error", "permanent_error")
            )
            assert after - reconciles <= 3, "one change, a few reconciles: no loop"
            await delete_workspace_and_wait(client, "refused", namespace)
    finally:
        await delete_quietly(client, POLICY_BINDING, policy_name)
        await delete_quietly(client, POLICY, policy_name)
        await delete_quietly(client, NODE, node)


async def test_a_restore_patch_made_from_a_stale_copy_is_refused_as_a_conflict(kube_api: Any, namespace: str) -> None:
    """The guard in ``restore_patch``: the API server applies it only to the resourceVersion it saw."""
    client = plain_client(kube_api)
    intent = _probe(SERVICE, "guarded", namespace)
    live = await client.create(SERVICE, intent)
    stale = live["metadata"]["resourceVersion"]
    await client.patch(SERVICE, "guarded", {"spec": {"ports": [{"port": 81}]}}, namespace=namespace)
    changed = await client.get(SERVICE, "guarded", namespace)
    differences = find_drift(intent, changed)
    assert [d.pointer for d in differences] == ["/spec/ports"]  # unnamed ports: an atomic list
    with pytest.raises(ApiError) as refused:
        await client.patch(
            SERVICE, "guarded", restore_patch(differences, stale), namespace=namespace, patch_type="json"
        )
    assert refused.value.status == 409 and refused.value.transient
    current = changed["metadata"]["resourceVersion"]
    restored = await client.patch(
        SERVICE, "guarded", restore_patch(differences, current), namespace=namespace, patch_type="json"
    )
    assert [p["port"] for p in restored["spec"]["ports"]] == [80]
