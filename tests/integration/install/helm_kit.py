"""The project's helm binary (sandbox/binaries.py builds it) against the sandbox's API server, with
its own config/cache folders; rendering the chart and applying what it renders."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sandbox.binaries import ensure_binaries

CHART = Path(__file__).resolve().parents[3] / "helm" / "kaito"

# The values an AKS install passes (scripts/setup-identity.sh prints them); GUIDs of the right shape.
AZURE_VALUES = {
    "workloadIdentity.clientId": "2f0a5b4e-7c1d-4e8a-9b3f-6d2c1a0e9f87",
    "workloadIdentity.tenantId": "8c3e2a1f-5b4d-4c6e-a7f8-9e0d1c2b3a45",
    "provisioner.azure.subscriptionId": "11111111-2222-3333-4444-555555555555",
    "provisioner.azure.resourceGroup": "rg-llm",
    "provisioner.azure.clusterName": "aks-llm",
    "provisioner.azure.location": "eastus",
}


@dataclass
class Helm:
    kubeconfig: Path
    home: Path

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        environment = {
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_DATA_HOME": str(self.home / "data"),
            "HOME": str(self.home),  # client-go's discovery cache goes to $HOME/.kube/cache, else to the cwd
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            [str(ensure_binaries().helm), *args],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def render(self, namespace: str, values: dict[str, str], release: str = "kaito") -> list[dict[str, Any]]:
        """`helm template` of the chart: the objects it would install."""
        result = self.run("template", release, str(CHART), "--namespace", namespace, *set_args(values))
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def set_args(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def container_env(objects: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = of_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", "") for item in container["env"]}
