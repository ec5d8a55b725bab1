"""Configuration from gpu-provisioner's environment names, and a plain report of what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_provisioner.settings import AzureSettings, ProvisionerSettings

AZURE_NAMES = [
    "ARM_SUBSCRIPTION_ID",
    "ARM_RESOURCE_GROUP",
    "AZURE_CLUSTER_NAME",
    "LOCATION",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "ARM_ENDPOINT",
    "AZURE_CA_BUNDLE",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AZURE_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_gpu_provisioner_variable_names_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("jwt")
    values = {
        "ARM_SUBSCRIPTION_ID": "sub",
        "ARM_RESOURCE_GROUP": "rg",
        "AZURE_CLUSTER_NAME": "cluster",
        "LOCATION": "eastus",
        "AZURE_CLIENT_ID": "client",
        "AZURE_TENANT_ID": "tenant",
        "AZURE_FEDERATED_TOKEN_FILE": str(token),
        "ARM_ENDPOINT": "https://127.0.0.1:8443",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = AzureSettings()
    assert (settings.subscription_id, settings.resource_group, settings.cluster_name, settings.location) == (
        "sub",
        "rg",
        "cluster",
        "eastus",
    )
    assert settings.arm_endpoint == "https://127.0.0.1:8443"
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.describe_problems() is None


def test_missing_identity_is_reported_by_name_with_the_fix() -> None:
    problem = AzureSettings(subscription_id="sub", resource_group="rg", cluster_name="c").describe_problems()
    assert problem is not None
    assert "AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE" in problem
    assert "scripts/setup-identity.sh" in problem


def test_a_token_file_that_does_not_exist_and_an_http_authority_are_reported(tmp_path: Path) -> None:
    settings = AzureSettings(
        subscription_id="s",
        resource_group="r",
        cluster_name="c",
        client_id="id",
        tenant_id="t",
        federated_token_file=tmp_path / "absent",
        authority_host="http://login.example",
    )
    problems = " ".join(settings.problems())
    assert "does not exist" in problems
    assert "must be an https:// URL" in problems


def test_tuning_defaults_follow_gpu_provisioner(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ProvisionerSettings()
    assert settings.gc_interval_s == 120
    assert settings.gc_grace_period_s == 30
    monkeypatch.setenv("PROVISIONER_GC_INTERVAL_S", "5")
    assert ProvisionerSettings().gc_interval_s == 5
