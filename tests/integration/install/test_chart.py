"""The chart with the project's own helm binary against the real API server: lint, templates for
several value sets accepted by a server-side dry run, values.schema.json refusing a wrong value by
name, and install → upgrade (changed values) → uninstall.

There is no earlier chart with templates to upgrade from (0.1.0 is the first), so the upgrade test
upgrades this chart to itself with changed values."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from kaito.settings import Settings
from kaito_operator.runtime import DEPLOYMENT, ResourceKind
from kaito_operator.testing import eventually, plain_client
from sandbox.controlplane import ControlPlane
from sandbox.kube import REQUEST_TIMEOUT, apply_objects, install_crds
from tests.integration.install.helm_kit import AZURE_VALUES, CHART, Helm, container_env, of_kind, set_args

pytestmark = [pytest.mark.controlplane]

DAEMONSET = ResourceKind("apps", "v1", "DaemonSet", "daemonsets", namespaced=True)
CLUSTERROLE = ResourceKind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False)

# prometheus-operator's ServiceMonitor CRD, reduced to what the API server needs to accept objects
# of its kind (the real one carries the full schema); the dry run only needs the kind to exist.
SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "names": {
            "kind": "ServiceMonitor",
            "listKind": "ServiceMonitorList",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }
        ],
    },
}

VALUE_SETS: dict[str, dict[str, str]] = {
    "defaults": {},
    "aks": AZURE_VALUES,
    "provisioner-off": {"provisioner.enabled": "false"},
    "device-plugin-off": {**AZURE_VALUES, "devicePlugin.enabled": "false"},
    "monitoring-on": {**AZURE_VALUES, "monitoring.serviceMonitor.enabled": "true"},
}


@pytest.fixture
def helm(control_plane: ControlPlane, tmp_path: Path) -> Helm:
    return Helm(control_plane.kubeconfig, tmp_path / "helm")


@pytest.fixture
async def second_namespace(kube_api: Any) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=REQUEST_TIMEOUT
    )
    yield name
    await core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_helm_lint_passes(helm: Helm, values: dict[str, str]) -> None:
    result = helm.run("lint", "--strict", str(CHART), *set_args(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
async def test_templates_pass_a_server_side_dry_run(
    helm: Helm, kube_api: Any, namespace: str, second_namespace: str, values: dict[str, str]
) -> None:
    if values.get("monitoring.serviceMonitor.enabled") == "true":
        await install_crds(kube_api, [SERVICE_MONITOR_CRD])
    for target in (namespace, second_namespace):
        objects = helm.render(target, values, release=f"kaito-{target}")
        admitted = await apply_objects(kube_api, objects, namespace=target, dry_run=True)
        assert [obj["metadata"]["name"] for obj in admitted] == [obj["metadata"]["name"] for obj in objects]
        cluster_scoped = ("ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration")
        namespaced = [obj for obj in objects if obj["kind"] not in cluster_scoped]
        assert all(obj["metadata"]["namespace"] == target for obj in namespaced)
        (binding,) = of_kind(objects, "ClusterRoleBinding")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "kaito-operator", "namespace": target}]
        environment = container_env(objects)
        assert environment["KAITO_LEADER_ELECTION_NAMESPACE"] == target
        assert bool(of_kind(objects, "ServiceMonitor")) == (values.get("monitoring.serviceMonitor.enabled") == "true")
        assert bool(of_kind(objects, "DaemonSet")) == (values.get("devicePlugin.enabled") != "false")


def test_provisioner_off_drops_its_permissions_azure_values_and_identity_label(helm: Helm) -> None:
    on = helm.render("kaito-system", AZURE_VALUES)
    off = helm.render("kaito-system", {**AZURE_VALUES, "provisioner.enabled": "false"})

    def rules(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
        (role,) = of_kind(objects, "ClusterRole")
        return {(resource, verb) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}

    dropped = rules(on) - rules(off)
    assert {("machines/status", "patch"), ("nodes", "patch"), ("nodes", "delete"), ("machines", "patch")} <= dropped
    assert rules(off) <= rules(on)
    assert {"ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "LOCATION"} <= set(container_env(on))
    assert not {"ARM_SUBSCRIPTION_ID", "ARM_RESOURCE_GROUP", "AZURE_CLUSTER_NAME", "LOCATION"} & set(container_env(off))
    assert container_env(off)["KAITO_PROVISIONER_ENABLED"] == "false"
    (deployment,) = of_kind(off, "Deployment")
    assert "azure.workload.identity/use" not in deployment["spec"]["template"]["metadata"]["labels"]


def test_workload_identity_values_reach_the_service_account_and_the_pod(helm: Helm) -> None:
    objects = helm.render("kaito-system", AZURE_VALUES)
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {
        "azure.workload.identity/client-id": AZURE_VALUES["workloadIdentity.clientId"],
        "azure.workload.identity/tenant-id": AZURE_VALUES["workloadIdentity.tenantId"],
    }
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    environment = container_env(objects)
    assert environment["ARM_SUBSCRIPTION_ID"] == AZURE_VALUES["provisioner.azure.subscriptionId"]
    assert environment["AZURE_CLUSTER_NAME"] == "aks-llm"
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "ghcr.io/kaito-py/kaito-operator:0.1.0", "the image the workflow publishes"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


def test_lease_timings_reach_the_operator_settings(helm: Helm, monkeypatch: pytest.MonkeyPatch) -> None:
    timings = {
        "operator.leaderElection.leaseDuration": "8",
        "operator.leaderElection.renewDeadline": "5",
        "operator.leaderElection.retryPeriod": "1",
    }
    environment = container_env(helm.render("kaito-system", {**AZURE_VALUES, **timings}))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # the operator's own reading of the rendered environment
    assert settings.leader_elect
    assert (
        settings.leader_election_lease_duration,
        settings.leader_election_renew_deadline,
        settings.leader_election_retry_period,
    ) == (8, 5.0, 1.0)


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operator.replicas=0", "'/operator/replicas'"),
        ("operator.logLevel=LOUD", "'/operator/logLevel'"),
        ("workloadIdentity.clientId=not-a-guid", "'/workloadIdentity/clientId'"),
        ("devicePlugin.enabeld=false", "'enabeld'"),
        ("operator.image.pullPolicy=Sometimes", "'/operator/image/pullPolicy'"),
        ("operator.leaderElection.renewDeadline=0", "'/operator/leaderElection/renewDeadline'"),
    ],
)
def test_a_wrong_value_fails_install_with_a_message_naming_it(helm: Helm, setting: str, named: str) -> None:
    # Helm names the value by its JSON pointer ('/operator/replicas'), an unknown one by its key.
    result = helm.run(
        "install", "kaito", str(CHART), "--dry-run", "--namespace", "kaito-system", "--set", setting, check=False
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr, result.stderr


# Kubernetes' name rules (k8s.io/apimachinery validation): a Service name is an RFC 1035 label, the
# others here DNS-1123 subdomains; Helm refuses release names over 53 characters.
DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LONGEST_RELEASE_NAMES = ["r" * 53, "kaito-" + "r" * 47]


@pytest.mark.parametrize("release", LONGEST_RELEASE_NAMES, ids=["plain", "says-kaito"])
async def test_the_longest_release_name_renders_valid_names(
    helm: Helm, kube_api: Any, namespace: str, release: str
) -> None:
    assert len(release) == 53
    everything_on = {**AZURE_VALUES, "monitoring.serviceMonitor.enabled": "true"}
    for extra in ({}, {"webhook.certManager.enabled": "true"}):
        objects = helm.render(namespace, {**everything_on, **extra}, release=release)
        for obj in objects:
            name = obj["metadata"]["name"]
            assert len(name) <= 63, f"{obj['kind']} {name}: {len(name)} characters"
            rule = DNS_1035_LABEL if obj["kind"] == "Service" else DNS_1123_SUBDOMAIN
            assert rule.fullmatch(name), f"{obj['kind']} {name}"
        names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
        environment = container_env(objects)
        assert ("Service", environment["KAITO_WEBHOOK_SERVICE_NAME"]) in names, "the operator names its own Service"
        secret_names = {name for kind, name in names if kind == "Role"}
        assert environment["KAITO_WEBHOOK_SECRET_NAME"] in secret_names | {
            obj["spec"]["secretName"] for obj in objects if obj["kind"] == "Certificate"
        }
    # The API server applies the same rules to what the default values render.
    await install_crds(kube_api, [SERVICE_MONITOR_CRD])
    objects = helm.render(namespace, everything_on, release=release)
    admitted = await apply_objects(kube_api, objects, namespace=namespace, dry_run=True)
    assert [obj["metadata"]["name"] for obj in admitted] == [obj["metadata"]["name"] for obj in objects]


@pytest.mark.parametrize(
    ("replicas", "min_available", "rendered"),
    [
        # A drain can evict a replica while fewer than all of them must stay (a percentage rounds up).
        ("2", "1", True),
        ("3", "2", True),
        ("3", "50%", True),
        ("1", "1", False),
        ("2", "2", False),
        ("1", "50%", False),
        ("2", "51%", False),
    ],
)
def test_the_disruption_budget_never_blocks_a_drain(
    helm: Helm, replicas: str, min_available: str, rendered: bool
) -> None:
    values = {"operator.replicas": replicas, "operator.podDisruptionBudget.minAvailable": min_available}
    budgets = of_kind(helm.render("kaito-system", values), "PodDisruptionBudget")
    assert bool(budgets) == rendered
    if budgets:
        assert str(budgets[0]["spec"]["minAvailable"]) == min_available


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (["operator.leaderElection.renewDeadline=15"], ["operator.leaderElection.renewDeadline", "leaseDuration"]),
        (["operator.leaderElection.leaseDuration=5"], ["operator.leaderElection.renewDeadline", "leaseDuration"]),
        (["operator.leaderElection.retryPeriod=10"], ["operator.leaderElection.retryPeriod", "renewDeadline"]),
        (["webhook.port=8080"], ["webhook.port", "operator.metricsPort"]),
        (["operator.healthPort=8080"], ["operator.healthPort", "operator.metricsPort"]),
        (["operator.healthPort=9443"], ["operator.healthPort", "webhook.port"]),
    ],
)
def test_values_that_contradict_each_other_fail_with_a_message_naming_them(
    helm: Helm, settings: list[str], named: list[str]
) -> None:
    arguments = [arg for setting in settings for arg in ("--set", setting)]
    result = helm.run("template", "kaito", str(CHART), "--namespace", "kaito-system", *arguments, check=False)
    assert result.returncode != 0
    for name in named:
        assert name in result.stderr, result.stderr


def test_the_webhook_port_may_equal_another_when_the_webhook_is_off(helm: Helm) -> None:
    values = {"webhook.enabled": "false", "webhook.port": "8081"}
    assert "KAITO_WEBHOOK_PORT" not in container_env(helm.render("kaito-system", values))


def test_the_lease_role_names_the_lease(helm: Helm) -> None:
    objects = helm.render("kaito-system", {"operator.leaderElection.leaseName": "my-lease"})
    (role,) = [obj for obj in of_kind(objects, "Role") if obj["metadata"]["name"].endswith("-leader-election")]
    for rule in role["rules"]:
        # create cannot be limited by name: RBAC does not know the name before the object exists.
        assert rule.get("resourceNames") == (None if rule["verbs"] == ["create"] else ["my-lease"]), rule
    assert container_env(objects)["KAITO_LEADER_ELECTION_ID"] == "my-lease"


async def test_install_upgrade_with_changed_values_and_uninstall(helm: Helm, kube_api: Any, namespace: str) -> None:
    kube = plain_client(kube_api)
    release = f"kaito-{namespace}"
    helm.run("install", release, str(CHART), "--namespace", namespace, *set_args(AZURE_VALUES))
    deployment = await kube.get(DEPLOYMENT, release, namespace)
    assert deployment["spec"]["replicas"] == 2
    assert (await kube.get(DAEMONSET, f"{release}-nvidia-device-plugin", namespace))["metadata"]["name"]

    helm.run(
        "upgrade",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *set_args(AZURE_VALUES),
        "--set",
        "operator.replicas=3",
        "--set",
        "devicePlugin.enabled=false",
        "--set",
        "operator.logLevel=DEBUG",
    )
    deployment = await kube.get(DEPLOYMENT, release, namespace)
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "KAITO_LOG_LEVEL", "value": "DEBUG"} in container["env"]
    daemonsets, _ = await kube.list(DAEMONSET, namespace)
    assert daemonsets == [], "turning the device plugin off removes it"
    assert "REVISION: 2" in helm.run("status", release, "--namespace", namespace).stdout

    helm.run("uninstall", release, "--namespace", namespace, "--wait")

    async def everything_gone() -> bool | None:
        deployments, _ = await kube.list(DEPLOYMENT, namespace)
        roles, _ = await kube.list(CLUSTERROLE, label_selector=f"app.kubernetes.io/instance={release}")
        return True if not deployments and not roles else None

    await eventually(everything_gone, timeout=30, what="the release's objects gone")
    crds = client.ApiextensionsV1Api(kube_api)
    assert await crds.read_custom_resource_definition("workspaces.kaito.sh", _request_timeout=REQUEST_TIMEOUT), (
        "Helm keeps CRDs on uninstall"
    )
