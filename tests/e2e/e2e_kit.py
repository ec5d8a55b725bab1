"""The end-to-end rig: the full control plane, the AKS + Entra ID simulator registering real nodes
(kwok keeps them Ready), and the operator (workspace controller + GPU provisioner) built by the
composition root, either in the test's event loop or as a ``kaito run`` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from gpu_provisioner.setup import ProvisionerFactory
from gpu_provisioner.testing import fast_provisioner
from kaito.operator import DEFAULT_CONTROLLERS, Operator
from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import NODE, KubeClient
from kaito_operator.testing import gone, wait_for
from sandbox.aks_simulator import AksSimulator
from sandbox.controlplane import die_with_parent

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def falcon_7b(namespace: str, *, name: str = "workspace-falcon-7b", count: int | None = None) -> dict[str, Any]:
    """The falcon-7b example, unchanged but for its namespace and a label space of its own (so it
    can never match another test's nodes)."""
    workspace: dict[str, Any] = yaml.safe_load((EXAMPLES / "kaito_workspace_falcon_7b.yaml").read_text())
    workspace["metadata"]["name"] = name
    workspace["metadata"]["namespace"] = namespace
    workspace["resource"]["labelSelector"] = {"matchLabels": {"apps": f"falcon-7b-{uuid.uuid4().hex[:6]}"}}
    if count is not None:
        workspace["resource"]["count"] = count
    return workspace


@dataclass
class EndToEnd:
    api: Any
    kube: KubeClient
    simulator: AksSimulator
    namespace: str
    kubeconfig: Path
    token_file: Path

    @property
    def selector(self) -> str:
        return f"{c.LABEL_WORKSPACE_NAMESPACE}={self.namespace}"

    def azure(self, **overrides: str) -> AzureSettings:
        environment = self.simulator.operator_environment(self.simulator.write_federated_token(self.token_file))
        return AzureSettings.model_validate({**environment, **overrides})

    @contextlib.asynccontextmanager
    async def operator(
        self, settings: ProvisionerSettings | None = None, **azure: str
    ) -> AsyncIterator[tuple[Operator, ProvisionerFactory]]:
        """Workspace controller + GPU provisioner in this event loop."""
        factory = ProvisionerFactory(azure=self.azure(**azure), settings=settings or fast_provisioner(self.selector))
        async with running_operator(self.api, [*DEFAULT_CONTROLLERS, factory]) as operator:
            yield operator, factory

    async def machines(self) -> list[dict[str, Any]]:
        machines, _ = await self.kube.list(MACHINE, label_selector=self.selector)
        return machines

    async def wait_workspace(self, name: str, predicate: Any, *, timeout: float = 90, what: str = "") -> Any:
        return await wait_for(
            self.kube, WORKSPACE, name, predicate, namespace=self.namespace, timeout=timeout, what=what
        )

    async def delete_workspace(self, name: str, *, timeout: float = 90) -> None:
        await self.kube.delete(WORKSPACE, name, self.namespace)
        await self.wait_workspace(name, gone, timeout=timeout, what=f"workspace {name} gone")

    async def nodes_of_pool(self, pool: str) -> list[dict[str, Any]]:
        nodes, _ = await self.kube.list(NODE, label_selector=f"{c.LABEL_AKS_AGENTPOOL}={pool}")
        return nodes


# --- the operator as a process -------------------------------------------------------------------------


class OperatorProcess:
    """``kaito run`` in a subprocess (SIGKILL-able), configured through its environment only."""

    def __init__(self, rig: EndToEnd, settings: dict[str, str], log: Path) -> None:
        self._environment = {
            **os.environ,
            **rig.simulator.operator_environment(rig.simulator.write_federated_token(rig.token_file)),
            "KUBECONFIG": str(rig.kubeconfig),
            "KAITO_HEALTH_PORT": "0",
            "KAITO_METRICS_PORT": "0",
            "KAITO_BIND_ADDRESS": "127.0.0.1",
            "KAITO_WEBHOOK_PORT": "0",  # served, not registered: these tests are about provisioning
            **settings,
        }
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "kaito.cli", "run"]
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self._environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509  (a SIGKILLed pytest leaves no operator behind)
            )

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, exactly like a node failure or an OOM kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        for _ in range(300):
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)  # waiting for the process to drain and exit (bounded)
        else:
            self.process.kill()
        return self.process.wait(timeout=10)

    def log_text(self) -> str:
        return self._log.read_text(errors="replace") if self._log.exists() else ""
