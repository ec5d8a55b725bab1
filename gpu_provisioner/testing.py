"""Test helpers for the GPU provisioner that users of the project may want too: a Kaito-shaped
Machine builder, deadline-bounded waits (watch-based for Kubernetes objects), fast settings, and
the operator (built by the composition root) running in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from gpu_provisioner.setup import ProvisionerFactory
from kaito_operator.manager import ControllerFactory, Operator, build_operator
from kaito_operator.runtime import ApiError, KubeClient, RealClock, ResourceKind, RuntimeMetrics
from kaito_operator.settings import Settings
from sandbox.aks_simulator import AksSimulator

T = TypeVar("T")


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 15.0, what: str = "") -> T:
    """Poll ``check`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result is not None:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        await asyncio.sleep(0.05)  # the poll interval of a deadline-bounded condition wait


def a_machine(
    name: str,
    *,
    namespace_label: str,
    instance_type: str = "Standard_NC12s_v3",
    storage: str = "120Gi",
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Machine as Kaito v0.1's workspace controller makes it (kaito-compat.md §8)."""
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {
            "name": name,
            "labels": {
                "karpenter.sh/provisioner-name": "default",
                "kaito.sh/workspace": "workspace-falcon-7b",
                "kaito.sh/workspacenamespace": namespace_label,
                "apps": "falcon-7b",
            },
            "annotations": annotations or {},
        },
        "spec": {
            "machineTemplateRef": {"name": name},
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": [instance_type]},
                {"key": "karpenter.sh/provisioner-name", "operator": "In", "values": ["default"]},
                {"key": "kaito.sh/machine-type", "operator": "In", "values": ["gpu"]},
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": storage}},
        },
    }


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return {}


def has_condition(kind: str, status: str, reason: str | None = None) -> Callable[[dict[str, Any] | None], bool]:
    def check(obj: dict[str, Any] | None) -> bool:
        found = condition(obj, kind)
        return found.get("status") == status and (reason is None or found.get("reason") == reason)

    return check


def gone(obj: dict[str, Any] | None) -> bool:
    return obj is None


async def wait_for(
    client: KubeClient,
    kind: ResourceKind,
    name: str,
    predicate: Callable[[dict[str, Any] | None], bool],
    *,
    namespace: str | None = None,
    timeout: float = 60.0,
    what: str = "",
) -> dict[str, Any] | None:
    """Watch one object until ``predicate(obj)`` holds (``obj`` is None once it is deleted)."""
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    last: dict[str, Any] | None = None
    while True:
        items, version = await client.list(kind, namespace, field_selector=selector)
        last = items[0] if items else None
        if predicate(last):
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or name}; last seen: {last}")
        try:
            async with asyncio.timeout(remaining):
                async for event in client.watch(
                    kind,
                    namespace,
                    resource_version=version,
                    timeout_seconds=max(1, int(remaining) + 1),
                    field_selector=selector,
                ):
                    if event["type"] == "BOOKMARK":
                        continue
                    last = None if event["type"] == "DELETED" else event["object"]
                    if predicate(last):
                        return last
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what or name}; last seen: {last}"
            ) from None
        except ApiError as error:
            if not error.gone:
                raise


def plain_client(api: Any) -> KubeClient:
    return KubeClient(api, clock=RealClock(), metrics=RuntimeMetrics(), qps=0, burst=1)


def operator_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "metrics_port": 0,
        "health_port": 0,
        "bind_address": "127.0.0.1",
        "qps": 0,
        "concurrency": 4,
        "shutdown_grace": 5,
        "request_timeout": 10,
    }
    values.update(overrides)
    return Settings(**values)


def fast_provisioner(selector: str, **overrides: Any) -> ProvisionerSettings:
    values: dict[str, Any] = {
        "poll_interval_s": 0.2,
        "arm_polling_interval_s": 0.05,
        "request_timeout_s": 10,
        "transient_retry_s": 0.2,
        "auth_retry_interval_s": 2,
        "gc_interval_s": 1,
        "gc_grace_period_s": 1,
        "machine_selector": selector,
    }
    values.update(overrides)
    return ProvisionerSettings(**values)


@contextlib.asynccontextmanager
async def running_operator(api: Any, factories: Sequence[ControllerFactory]) -> AsyncIterator[Operator]:
    """The operator built by the composition root with the test's ApiClient, run in this loop."""
    operator = await build_operator(operator_settings(), api_client=api, controllers=list(factories))
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop), name="operator")
    try:
        async with asyncio.timeout(30):
            while not operator.manager.ready:
                if task.done():
                    raise AssertionError(f"operator exited early: {task.result()}")
                await asyncio.sleep(0.05)  # poll the readiness flag while the caches fill
        yield operator
    finally:
        stop.set()
        code = await task
        await operator.aclose()  # runs the factories' closers too
        assert code == 0, f"operator failed: {operator.manager.failure}"


@contextlib.asynccontextmanager
async def provisioner_operator(
    api: Any, simulator: AksSimulator, token_file: Path, settings: ProvisionerSettings, **azure: Any
) -> AsyncIterator[ProvisionerFactory]:
    """An operator running only the GPU provisioner, talking to ``simulator``."""
    environment = simulator.operator_environment(simulator.write_federated_token(token_file))
    factory = ProvisionerFactory(azure=AzureSettings(**{**environment, **azure}), settings=settings)
    async with running_operator(api, [factory]):
        yield factory
