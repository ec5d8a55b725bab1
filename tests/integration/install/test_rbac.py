"""The chart's RBAC, proven: `helm install` of the chart into the sandbox, then the operator (Workspace
controller + GPU provisioner against the AKS simulator, leader election on) runs out of cluster as
the chart's ServiceAccount (a token from the TokenRequest API) through the whole provisioning flow:
Workspace → Machine → agent pool → node → Deployment/Service → Ready → delete → all gone. A missing
permission fails the flow; a granted permission the flow never used fails the second test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from gpu_provisioner.settings import AzureSettings
from gpu_provisioner.setup import ProvisionerFactory
from gpu_provisioner.testing import fast_provisioner
from kaito.operator import DEFAULT_CONTROLLERS
from kaito.testing import admission_ready, running_operator, webhook_settings
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NODE, ApiError
from kaito_operator.runtime.kinds import VALIDATING_WEBHOOK_CONFIGURATION
from kaito_operator.testing import (
    force_delete,
    force_delete_machines,
    gone,
    is_true,
    plain_client,
    wait_for,
)
from kaito_operator.webhook.server import WEBHOOK_NAME
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.controlplane import ControlPlane
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig
from tests.integration.install.helm_kit import AZURE_VALUES, CHART, Helm, set_args

pytestmark = [pytest.mark.controlplane, pytest.mark.full]

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "kaito_workspace_falcon_7b.yaml"
LEASE_NAME = "kaito-operator-leader"  # operator.leaderElection.leaseName's default

# RBAC verb of each client verb. Server-side apply is a PATCH, authorized as patch.
RBAC_VERB = {"apply": "patch"}

# Granted although the request metrics cannot show them, each on a code path the flow does take or
# the operator provably takes elsewhere:
ALLOWED_UNSEEN = {
    # Server-side apply that creates the object is authorized as create too (the API server's patch
    # handler checks create when the object does not exist): the Workspace controller's
    # _ensure_child creates the Deployment and the Service that way in this very flow (remove the
    # verb and the flow fails), but the metric counts those requests as apply.
    ("apps", "deployments", "create"),
    ("", "services", "create"),
    # EventRecorder.record (kaito_operator/runtime/events.py) gets and patches an Event when the same
    # event repeats (count + 1); the flow emits each event once.
    ("", "events", "get"),
    ("", "events", "patch"),
    # The webhook's certificate keeper (kaito_operator/webhook/keeper.py, _current_or_renewed) replaces
    # its Secret when the certificate is due for renewal; a fresh install only creates it.
    ("", "secrets", "update"),
}


@dataclass
class FlowRun:
    used: dict[tuple[str, str, str, str], int]
    """(verb, group, resource, subresource) → requests, from the operator's RuntimeMetrics."""
    cluster_rules: list[dict[str, Any]]
    role_rules: list[dict[str, Any]]
    release_namespace: str


async def _service_account_kubeconfig(kube_api: Any, control_plane: ControlPlane, namespace: str, path: Path) -> Path:
    """A kubeconfig for the chart's ServiceAccount, with a token from the TokenRequest API."""
    core = client.CoreV1Api(kube_api)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = await core.create_namespaced_service_account_token(
        "kaito-operator", namespace, request, _request_timeout=REQUEST_TIMEOUT
    )
    return _write_token_kubeconfig(control_plane.kubeconfig, token.status.token, path)


def _write_token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """The admin kubeconfig's cluster (server, CA) with a bearer token as the only user."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "kaito-operator", "user": {"token": token}}],
                "contexts": [{"name": "sa", "context": {"cluster": cluster["name"], "user": "kaito-operator"}}],
                "current-context": "sa",
            }
        )
    )
    return path


def _workspace(namespace: str) -> dict[str, Any]:
    workspace: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    workspace["metadata"]["namespace"] = namespace
    workspace["resource"]["labelSelector"] = {"matchLabels": {"apps": f"falcon-7b-{uuid.uuid4().hex[:6]}"}}
    return workspace


@contextlib.asynccontextmanager
async def _namespace(kube_api: Any) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=REQUEST_TIMEOUT
    )
    try:
        yield name
    finally:
        await core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)


@pytest.fixture(scope="module")
async def flow(
    kube_api: Any, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FlowRun]:
    """Install the chart, run the provisioning flow as its ServiceAccount, uninstall."""
    folder = tmp_path_factory.mktemp("rbac")
    admin = plain_client(kube_api)
    helm = Helm(control_plane.kubeconfig, folder / "helm")
    async with _namespace(kube_api) as release_namespace, _namespace(kube_api) as namespace:
        release = f"kaito-{release_namespace}"
        helm.run("install", release, str(CHART), "--namespace", release_namespace, *set_args(AZURE_VALUES))
        try:
            kubeconfig = await _service_account_kubeconfig(kube_api, control_plane, release_namespace, folder / "sa")
            config = SimulatorConfig(
                kubeconfig=control_plane.kubeconfig, provisioning_delay_s=1.0, deletion_delay_s=0.3
            )
            async with AksSimulator(config) as simulator, await api_client_from_kubeconfig(kubeconfig) as as_chart:
                azure = AzureSettings.model_validate(
                    simulator.operator_environment(simulator.write_federated_token(folder / "token"))
                )
                selector = f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}"
                factory = ProvisionerFactory(azure=azure, settings=fast_provisioner(selector))
                try:
                    async with running_operator(
                        as_chart,
                        [*DEFAULT_CONTROLLERS, factory],
                        leader_elect=True,
                        leader_election_namespace=release_namespace,
                        leader_election_id=LEASE_NAME,
                        **_chart_webhook(release, release_namespace),
                    ) as operator:
                        await admission_ready(admin, namespace)
                        await _provision_and_delete(admin, simulator, namespace)
                        used = operator.metrics.api_requests_by_resource()
                finally:
                    # The operator that answered it is gone: the registration goes first (uninstall
                    # would remove it too), so the clean-up's writes are not refused.
                    with contextlib.suppress(ApiError):
                        await admin.delete(VALIDATING_WEBHOOK_CONFIGURATION, WEBHOOK_NAME)
                    for workspace in (await admin.list(WORKSPACE, namespace))[0]:
                        await force_delete(admin, WORKSPACE, workspace["metadata"]["name"], namespace)
                    await force_delete_machines(admin, namespace)
            rbac = client.RbacAuthorizationV1Api(kube_api)
            cluster_role = await rbac.read_cluster_role(release, _request_timeout=REQUEST_TIMEOUT)
            roles = [
                await rbac.read_namespaced_role(name, release_namespace, _request_timeout=REQUEST_TIMEOUT)
                for name in (f"{release}-leader-election", f"{release}-webhook-cert")
            ]
            yield FlowRun(
                used=used,
                cluster_rules=[r.to_dict() for r in cluster_role.rules],
                role_rules=[r.to_dict() for role in roles for r in role.rules],
                release_namespace=release_namespace,
            )
        finally:
            helm.run("uninstall", release, "--namespace", release_namespace, "--wait")


def _chart_webhook(release: str, release_namespace: str) -> dict[str, Any]:
    """The webhook settings the chart's Deployment sets, except that the API server reaches this
    out-of-cluster operator by URL: the operator rewrites the chart's registration to it (with the
    chart's permission to update that one configuration) and keeps its certificate in the chart's
    Secret (with the chart's Role)."""
    settings = webhook_settings(release_namespace)
    settings.update(
        webhook_secret_name=f"{release}-webhook-cert",
        webhook_service_name=f"{release}-webhook",
        webhook_configuration_name=WEBHOOK_NAME,
        webhook_namespace_selector=None,
    )
    return settings


async def _provision_and_delete(admin: Any, simulator: AksSimulator, namespace: str) -> None:
    await admin.create(WORKSPACE, _workspace(namespace))
    ready = await wait_for(
        admin,
        WORKSPACE,
        "workspace-falcon-7b",
        is_true(c.COND_WORKSPACE_READY),
        namespace=namespace,
        timeout=120,
        what="WorkspaceReady under the chart's ServiceAccount",
    )
    assert ready is not None
    (machine,) = (await admin.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}"))[0]
    pool, node = machine["metadata"]["name"], ready["status"]["workerNodes"][0]
    assert pool in simulator.cluster.pools
    await admin.delete(WORKSPACE, "workspace-falcon-7b", namespace)
    await wait_for(
        admin, WORKSPACE, "workspace-falcon-7b", gone, namespace=namespace, timeout=120, what="Workspace gone"
    )
    await wait_for(admin, MACHINE, pool, gone, timeout=60, what="Machine gone")
    await wait_for(admin, NODE, node, gone, timeout=60, what="node gone")
    assert pool not in simulator.cluster.pools


def _granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    granted = set()
    for rule in rules:
        for group in rule["api_groups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted


def _used(run: FlowRun) -> set[tuple[str, str, str]]:
    return {
        (group, f"{resource}/{sub}" if sub else resource, RBAC_VERB.get(verb, verb))
        for (verb, group, resource, sub), count in run.used.items()
        if count
    }


async def test_the_provisioning_flow_runs_as_the_charts_service_account(flow: FlowRun, kube_api: Any) -> None:
    # The flow itself asserted Ready and every object gone; here: it really ran as that identity,
    # which holds only what the chart granted.
    assert ("patch", "karpenter.sh", "machines", "status") in flow.used
    assert ("create", "coordination.k8s.io", "leases", "") in flow.used, "leader election ran"
    review = client.AuthorizationV1Api(kube_api)
    subject = f"system:serviceaccount:{flow.release_namespace}:kaito-operator"
    for verb, resource, group in (
        ("list", "secrets", ""),
        ("delete", "workspaces", "kaito.sh"),
        ("create", "pods", ""),
    ):
        answer = await review.create_subject_access_review(
            client.V1SubjectAccessReview(
                spec=client.V1SubjectAccessReviewSpec(
                    user=subject,
                    resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, group=group),
                )
            ),
            _request_timeout=REQUEST_TIMEOUT,
        )
        assert not answer.status.allowed, f"{subject} may {verb} {resource}"


def test_the_chart_grants_nothing_the_flow_did_not_use(flow: FlowRun) -> None:
    granted = _granted(flow.cluster_rules) | _granted(flow.role_rules)
    assert not any("*" in part for grant in granted for part in grant), "no wildcards"
    used = _used(flow)
    assert used, "the metric recorded the flow's requests"
    unused = granted - used - ALLOWED_UNSEEN
    assert not unused, f"granted but never used by the flow: {sorted(unused)}"
    assert granted >= ALLOWED_UNSEEN, "the allowlist names only what the chart grants"
    missing = used - granted
    assert not missing, f"used but not granted (the flow should have failed): {sorted(missing)}"
    role_resources = {resource for _, resource, _ in _granted(flow.role_rules)}
    assert role_resources == {"leases", "secrets"}, "the namespaced Roles hold the Lease and the webhook's Secret"
