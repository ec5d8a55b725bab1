"""Test helpers that build the whole operator through the composition root, for anyone testing
against a real control plane (the project's suites and benchmarks use them too).

- ``operator_settings``: operator settings for a test (free ports on 127.0.0.1, no rate limit).
- ``running_operator``: the operator with chosen controller factories, in the caller's event loop.
- ``provisioner_operator``: an operator running only the GPU provisioner, against the AKS simulator.
- ``webhook_settings`` / ``admission_webhook``: the operator's admission webhook registered by URL on
  127.0.0.1 for one namespace (as the sandbox does), and gone again afterwards.

The generic helpers (waits, builders, conditions, clean-up) are in ``kaito_operator.testing``; the
control-plane fixtures in the ``sandbox.testing`` pytest plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from gpu_provisioner.setup import ProvisionerFactory
from kaito.operator import DEFAULT_CONTROLLERS, ControllerFactory, Operator, build_operator
from kaito.settings import Settings
from kaito_operator.api.constants import KAITO_GROUP, KAITO_VERSION, WORKSPACE_KIND
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import ApiError, KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.kinds import VALIDATING_WEBHOOK_CONFIGURATION
from kaito_operator.testing import eventually, plain_client
from kaito_operator.webhook.server import WEBHOOK_PATH
from sandbox.aks_simulator import AksSimulator
from sandbox.controlplane import free_port

START_TIMEOUT_S = 30.0
"""How long the operator may take to sync its caches and start its controllers."""


@dataclass(frozen=True)
class RunningProvisioner:
    """What ``provisioner_operator`` yields: the provisioner's factory (its controllers, the cloud, the
    configuration check) and the operator running it (metrics, /readyz)."""

    factory: ProvisionerFactory
    operator: Operator

    @property
    def machines(self) -> Any:
        """The Machine controller's reconciler (``gpu_provisioner.machine.MachineController``)."""
        provisioner = self.factory.provisioner
        assert provisioner is not None and provisioner.machine_controller is not None
        return provisioner.machine_controller.reconciler

    def reconciles(self, controller: str) -> float:
        return reconciles(self.operator, controller)


def reconciles(operator: Operator, controller: str) -> float:
    """How many reconciles ``controller`` finished so far (any outcome), from the operator's metrics:
    what a test waits on instead of sleeping through an observation window."""
    total = 0.0
    for metric in operator.metrics.reconciles.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("controller") == controller:
                total += sample.value
    return total


async def reconciled_again(operator: Operator, controller: str, since: float, *, timeout: float = 30) -> None:
    """Wait until ``controller`` finished another reconcile after the count ``since``."""

    async def more() -> bool | None:
        return True if reconciles(operator, controller) > since else None

    await eventually(more, timeout=timeout, what=f"another reconcile of {controller}")


class OperatorFailed(RuntimeError):
    """The operator under test did not start, or did not exit cleanly."""


def operator_settings(**overrides: Any) -> Settings:
    """Settings for an operator in a test: any free ports on 127.0.0.1, no rate limit, quick stops."""
    values: dict[str, Any] = {
        "metrics_port": 0,
        "health_port": 0,
        "bind_address": "127.0.0.1",
        "qps": 0,
        "concurrency": 4,
        "shutdown_grace": 5,
        "request_timeout": 10,
        "webhook_enabled": False,  # admission_webhook turns it on, registered for one namespace
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_operator(
    api: Any,
    factories: Sequence[ControllerFactory] = DEFAULT_CONTROLLERS,
    *,
    clock: Clock | None = None,
    **settings: Any,
) -> AsyncIterator[Operator]:
    """The operator built by the composition root with the test's ApiClient and ``factories``' controllers,
    run in this event loop; yields once its controllers run. ``settings``: overrides of ``operator_settings``;
    ``clock``: the operator's clock (a ``FakeClock`` that the test steps).
    On leaving, it is stopped and closed (the factories' closers run too); raises ``OperatorFailed`` if it
    did not start or did not exit cleanly."""
    operator = await build_operator(
        operator_settings(**settings), api_client=api, controllers=list(factories), clock=clock
    )
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop), name="operator")
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            started = await operator.manager.wait_running()
        if not started:
            raise OperatorFailed(f"operator did not start: {operator.manager.failure}")
        yield operator
    finally:
        stop.set()
        code = await task
        await operator.aclose()  # runs the factories' closers too
        if code != 0:
            raise OperatorFailed(f"operator failed: {operator.manager.failure}")


@contextlib.asynccontextmanager
async def provisioner_operator(
    api: Any,
    simulator: AksSimulator,
    token_file: Path,
    settings: ProvisionerSettings,
    *,
    clock: Clock | None = None,
    **azure: Any,
) -> AsyncIterator[RunningProvisioner]:
    """An operator running only the GPU provisioner, talking to ``simulator``."""
    environment = simulator.operator_environment(simulator.write_federated_token(token_file))
    factory = ProvisionerFactory(azure=AzureSettings(**{**environment, **azure}), settings=settings)
    async with running_operator(api, [factory], clock=clock) as operator:
        yield RunningProvisioner(factory, operator)


def webhook_settings(namespace: str) -> dict[str, Any]:
    """Operator settings that serve the webhook on a free port of 127.0.0.1 and register it by URL for
    Workspaces in ``namespace`` only (its certificate Secret lives there too)."""
    port = free_port()
    return {
        "webhook_enabled": True,
        "webhook_port": port,
        "webhook_url": f"https://127.0.0.1:{port}{WEBHOOK_PATH}",
        "webhook_namespace": namespace,
        "webhook_configuration_name": f"kaito-test-{namespace}",
        "webhook_namespace_selector": {"kubernetes.io/metadata.name": namespace},
    }


async def admission_ready(kube: KubeClient, namespace: str, *, timeout: float = 30.0) -> None:
    """Wait until the API server sends this namespace's Workspaces to the webhook (it learns of a new
    registration through a watch): a dry-run create of an invalid Workspace is refused by it."""
    probe = {
        "apiVersion": f"{KAITO_GROUP}/{KAITO_VERSION}",
        "kind": WORKSPACE_KIND,
        "metadata": {"name": "admission-probe", "namespace": namespace},
        "resource": {"count": 1, "labelSelector": {}},
        "inference": {},
    }

    async def refused() -> bool | None:
        try:
            await kube.apply(WORKSPACE, probe, field_manager="admission-probe", dry_run=True)
        except ApiError as error:
            return True if "denied the request" in error.api_message else None
        return None

    await eventually(refused, timeout=timeout, what="the admission webhook to answer")


@contextlib.asynccontextmanager
async def admission_webhook(
    api: Any, namespace: str, factories: Sequence[ControllerFactory] = DEFAULT_CONTROLLERS, **settings: Any
) -> AsyncIterator[Operator]:
    """``running_operator`` with its webhook registered for ``namespace``; yields once the API server
    calls it. On leaving, the registration goes first, so the namespace's clean-up is not refused."""
    kube = plain_client(api)
    values = {**webhook_settings(namespace), **settings}
    try:
        async with running_operator(api, factories, **values) as operator:
            await admission_ready(kube, namespace)
            yield operator
            await _unregister(kube, values["webhook_configuration_name"])
    finally:
        await _unregister(kube, values["webhook_configuration_name"])


async def _unregister(kube: KubeClient, name: str) -> None:
    try:
        await kube.delete(VALIDATING_WEBHOOK_CONFIGURATION, name)
    except ApiError as error:
        if not error.not_found:
            raise
