"""Wiring: the factory the composition root calls to add the GPU provisioner to ``kaito run``.

It builds the AKS cloud provider from the environment (or takes one, for tests), the Machine
controller and the garbage collector, and registers both with the shared ``Manager``. A missing or
broken Azure configuration does not crash the process: it is logged once, plainly, with what to
set and how (scripts/setup-identity.sh), and every Machine shows the same message in its
MachineLaunched condition until the configuration is fixed and the operator restarted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gpu_provisioner.aks import AksCloudProvider
from gpu_provisioner.cloudprovider import CloudProvider, Instance, InstanceSpec, Operation, OperationProgress
from gpu_provisioner.configuration_check import CHECK_KEY, ConfigurationCheck
from gpu_provisioner.errors import Unauthorized
from gpu_provisioner.gc import GC_KEY, GarbageCollector
from gpu_provisioner.machine import MachineController, map_node_to_machine, wakes_the_controller
from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from kaito_operator.api.kinds import MACHINE
from kaito_operator.runtime import NODE, Controller, EventRecorder, Manager, ObjectKey, Result

log = logging.getLogger(__name__)
MACHINE_CONTROLLER = "gpu-provisioner-machine"
GC_CONTROLLER = "gpu-provisioner-gc"
CHECK_CONTROLLER = "gpu-provisioner-configuration-check"


class UnconfiguredCloud:
    """Stands in for Azure when the provisioner cannot reach it: every call fails with the
    configuration problem, which then shows on each Machine instead of in a crash loop."""

    def __init__(self, problem: str) -> None:
        self.problem = problem

    async def create(self, spec: InstanceSpec) -> Operation:
        raise Unauthorized(self.problem)

    async def delete(self, name: str) -> Operation:
        raise Unauthorized(self.problem)

    async def poll(self, operation: Operation) -> OperationProgress:
        raise Unauthorized(self.problem)

    async def get(self, name: str) -> Instance:
        raise Unauthorized(self.problem)

    async def list(self) -> list[Instance]:
        raise Unauthorized(self.problem)


@dataclass
class Provisioner:
    """What the factory built. Call :meth:`close` when the manager has stopped."""

    machine_controller: Controller | None
    gc_controller: Controller | None
    cloud: CloudProvider | None
    problem: str | None
    """The configuration problem that keeps Azure out of reach, if any."""
    check: ConfigurationCheck | None = None
    """The start-up (and periodic) check of the Azure configuration; its ``problem`` feeds /readyz."""

    async def close(self) -> None:
        if isinstance(self.cloud, AksCloudProvider):
            await self.cloud.close()


def build_provisioner_controllers(
    manager: Manager,
    *,
    recorder: EventRecorder | None = None,
    azure: AzureSettings | None = None,
    settings: ProvisionerSettings | None = None,
    cloud: CloudProvider | None = None,
    concurrency: int = 10,
) -> Provisioner:
    """Register the Machine controller and the agent-pool garbage collector with ``manager``.

    ``azure`` / ``settings`` default to reading the environment; ``cloud`` replaces the AKS
    provider (tests). With ``PROVISIONER_ENABLED=false`` nothing is registered.
    """
    settings = settings or ProvisionerSettings()
    if not settings.enabled:
        log.info("GPU provisioner disabled (PROVISIONER_ENABLED=false); Machines are left to another provisioner")
        return Provisioner(None, None, None, None)
    azure = azure or AzureSettings()
    problem: str | None = None
    if cloud is None:
        problem = azure.describe_problems()
        if problem is None:
            cloud = AksCloudProvider(azure, settings)
        else:
            log.error("%s", problem)
            cloud = UnconfiguredCloud(problem)
    recorder = recorder or EventRecorder(manager.client, manager.clock, component="gpu-provisioner")
    cluster_name = azure.cluster_name or "unconfigured"
    machines = manager.informer(MACHINE)
    nodes = manager.informer(NODE)
    check = ConfigurationCheck(cloud=cloud, settings=settings, cluster=cluster_name)
    reconciler = MachineController(
        client=manager.client,
        machines=machines,
        nodes=nodes,
        cloud=cloud,
        recorder=recorder,
        clock=manager.clock,
        settings=settings,
        cluster_name=cluster_name,
        configuration_problem=lambda: check.problem,
    )
    machine_controller = manager.controller(MACHINE_CONTROLLER, reconciler, concurrency=concurrency)
    handled = reconciler.handled
    machine_controller.watch(machines, predicate=lambda event: handled(event.obj) and wakes_the_controller(event))
    machine_controller.watch(nodes, map_node_to_machine)
    check.wake_on_change(machine_controller, machines)
    check_controller = manager.controller(CHECK_CONTROLLER, check, concurrency=1)
    check_controller.queue.add(CHECK_KEY)
    gc_controller: Controller | None = None
    if problem is None:
        gc_controller = manager.controller(
            GC_CONTROLLER,
            GarbageCollector(
                client=manager.client,
                machines=machines,
                nodes=nodes,
                cloud=cloud,
                clock=manager.clock,
                settings=settings,
                cluster_name=cluster_name,
                machine_controller=machine_controller,
            ),
            concurrency=1,
        )
        gc_controller.queue.add(GC_KEY)
    return Provisioner(machine_controller, gc_controller, cloud, problem, check)


class _Disabled:
    async def reconcile(self, key: ObjectKey) -> Result:
        return Result()


class ProvisionerFactory:
    """A controller factory for the composition root (``kaito.operator``: a callable
    ``(OperatorContext) -> Controller``). It registers the Machine controller and the garbage
    collector and returns the Machine controller; it closes its Azure clients through the
    context's ``on_close`` once the manager stopped.

    ``azure`` / ``settings`` / ``cloud`` are as for :func:`build_provisioner_controllers`.
    """

    def __init__(
        self,
        *,
        azure: AzureSettings | None = None,
        settings: ProvisionerSettings | None = None,
        cloud: CloudProvider | None = None,
    ) -> None:
        self._azure = azure
        self._settings = settings
        self._cloud = cloud
        self.provisioner: Provisioner | None = None

    def __call__(self, context: Any) -> Controller:
        manager: Manager = context.manager
        self.provisioner = build_provisioner_controllers(
            manager,
            recorder=context.recorder("gpu-provisioner"),
            azure=self._azure,
            settings=self._settings,
            cloud=self._cloud,
            concurrency=max(10, int(context.settings.concurrency)),
        )
        context.on_close(self.close)  # the Azure HTTP session outlives the manager's run
        check = self.provisioner.check
        if check is not None:
            context.add_readiness_check("azure-configuration", check.readiness)
        if self.provisioner.machine_controller is not None:
            return self.provisioner.machine_controller
        # Disabled: an idle controller that is never registered, so nothing runs.
        return Controller(MACHINE_CONTROLLER, _Disabled(), clock=manager.clock, metrics=manager.metrics)

    async def close(self) -> None:
        if self.provisioner is not None:
            await self.provisioner.close()
