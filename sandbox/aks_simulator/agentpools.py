"""The simulated managed cluster: its agent pools, their long-running operations, and AKS's checks.

HTTP-free on purpose: ``server.py`` maps requests onto these methods, and every refusal is an
``ArmError`` carrying the status, ARM error code and message AKS would send.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.aks_simulator.config import Fault, FaultTarget, SimulatorConfig
from sandbox.aks_simulator.nodes import NodeRegistrar, node_manifest
from sandbox.aks_simulator.sizes import canonical_size

log = logging.getLogger(__name__)

POOL_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")
_TAINT = re.compile(r"^[^=:\s]+=[^:\s]*:(NoSchedule|PreferNoSchedule|NoExecute)$")
_FORBIDDEN_TAG_CHARACTERS = set("<>%&\\?/")
_OS_SKUS = {
    "ubuntu",
    "ubuntu2204",
    "ubuntu2404",
    "azurelinux",
    "azurelinux3",
    "cblmariner",
    "windows2019",
    "windows2022",
    "windows2025",
}
# Fields AKS refuses to change on an existing pool.
_IMMUTABLE = ("vmSize", "osType", "osSKU", "osDiskSizeGB", "type")
_ORCHESTRATOR_VERSION = "1.30.6"
_NODE_IMAGE_VERSION = "AKSUbuntu-2204gen2containerd-202410.15.0"

OperationKind = Literal["create", "update", "delete"]


class ArmError(Exception):
    """An ARM error answer: ``{"error": {"code", "message"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _iso(moment: datetime.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class AsyncOperation:
    id: str
    kind: OperationKind
    pool: str
    status: str = "InProgress"
    start_time: datetime.datetime = field(default_factory=_now)
    end_time: datetime.datetime | None = None
    error: dict[str, str] | None = None

    @property
    def finished(self) -> bool:
        return self.status != "InProgress"

    def finish(self, status: str, error: dict[str, str] | None = None) -> None:
        self.status = status
        self.error = error
        self.end_time = _now()


@dataclass
class AgentPoolRecord:
    name: str
    properties: dict[str, Any]
    provisioning_state: str
    vmss_digits: str
    operation_id: str | None = None
    node_names: list[str] = field(default_factory=list)

    @property
    def vmss_name(self) -> str:
        return f"aks-{self.name}-{self.vmss_digits}-vmss"


def _fail(pool: AgentPoolRecord, operation: AsyncOperation, code: str, message: str) -> None:
    """End an operation Failed the way AKS reports it: the pool's state and the operation's error."""
    pool.provisioning_state = "Failed"
    operation.finish("Failed", {"code": code, "message": message})


def _bad(message: str, code: str = "InvalidParameter") -> ArmError:
    return ArmError(400, code, message)


class SimulatedCluster:
    """One managed cluster's agent pools; the operations run as asyncio tasks on the caller's loop."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        registrar: NodeRegistrar | None = None,
        on_fault_used: Callable[[Fault], None] | None = None,
    ) -> None:
        self.config = config
        self.registrar = registrar
        self.pools: dict[str, AgentPoolRecord] = {}
        self.operations: dict[str, AsyncOperation] = {}
        self.faults: list[Fault] = list(config.faults)
        self._operation_ids = itertools.count(1)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._on_fault_used = on_fault_used

    # --- faults ---------------------------------------------------------------------------------
    def take_fault(self, target: FaultTarget, pool: str | None, *, asynchronous: bool = False) -> Fault | None:
        """The first fault that hits this request, counting one use of it."""
        for fault in self.faults:
            if fault.target != target or fault.asynchronous != asynchronous:
                continue
            if fault.pool is not None and (pool is None or fault.pool.lower() != pool.lower()):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
            if self._on_fault_used is not None:
                self._on_fault_used(fault)
            return fault
        return None

    # --- reads ----------------------------------------------------------------------------------
    def _pool(self, name: str) -> AgentPoolRecord:
        pool = self.pools.get(name.lower())
        if pool is None:
            raise ArmError(
                404,
                "NotFound",
                f"Agent Pool not found: agentpool '{name}' does not exist in managed cluster "
                f"'{self.config.cluster_name}'.",
            )
        return pool

    def pool_wire(self, pool: AgentPoolRecord) -> dict[str, Any]:
        cfg = self.config
        return {
            "id": f"/subscriptions/{cfg.subscription_id}/resourcegroups/{cfg.resource_group}/providers/"
            f"Microsoft.ContainerService/managedClusters/{cfg.cluster_name}/agentPools/{pool.name}",
            "name": pool.name,
            "type": "Microsoft.ContainerService/managedClusters/agentPools",
            "properties": {
                **pool.properties,
                "provisioningState": pool.provisioning_state,
                "powerState": {"code": "Running"},
                "currentOrchestratorVersion": pool.properties.get("orchestratorVersion"),
            },
        }

    def get(self, name: str) -> dict[str, Any]:
        return self.pool_wire(self._pool(name))

    def list(self) -> list[dict[str, Any]]:
        return [self.pool_wire(pool) for pool in sorted(self.pools.values(), key=lambda p: p.name)]

    def operation(self, operation_id: str) -> AsyncOperation:
        operation = self.operations.get(operation_id)
        if operation is None:
            raise ArmError(404, "NotFound", f"Operation {operation_id} not found.")
        return operation

    def operation_wire(self, operation: AsyncOperation) -> dict[str, Any]:
        cfg = self.config
        wire: dict[str, Any] = {
            "id": f"/subscriptions/{cfg.subscription_id}/providers/Microsoft.ContainerService/locations/"
            f"{cfg.location}/operations/{operation.id}",
            "name": operation.id,
            "status": operation.status,
            "startTime": _iso(operation.start_time),
        }
        if operation.end_time is not None:
            wire["endTime"] = _iso(operation.end_time)
        if operation.error is not None:
            wire["error"] = operation.error
        return wire

    # --- validation, as AKS does it ------------------------------------------------------------
    def _validated_properties(self, name: str, body: Any) -> dict[str, Any]:
        if not POOL_NAME.match(name):
            raise _bad(
                f"Agent Pool name '{name}' is invalid. The agent pool name must contain only lowercase "
                "letters and numbers, start with a lowercase letter, and be between 1 and 12 characters "
                "long.",
            )
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'properties' is required.")
        properties: dict[str, Any] = dict(body["properties"])
        vm_size = properties.get("vmSize")
        if not isinstance(vm_size, str) or not vm_size:
            raise _bad("The value of parameter agentPoolProfile.vmSize is invalid: it is required.")
        canonical = canonical_size(vm_size, self.config.allowed_vm_sizes)
        if canonical is None:
            raise ArmError(
                400,
                "BadRequest",
                f"The VM size of {vm_size} is not allowed in your subscription in location '{self.config.location}'.",
            )
        properties["vmSize"] = canonical
        mode = properties.setdefault("mode", "User")
        if mode not in ("System", "User"):
            raise _bad(f"The value of parameter agentPoolProfile.mode is invalid: '{mode}'.")
        count = properties.setdefault("count", 1)
        low = 1 if mode == "System" else 0
        if not isinstance(count, int) or isinstance(count, bool) or not low <= count <= 1000:
            raise _bad(
                f"The value of parameter agentPoolProfile.count is invalid: {count!r}. The count of a "
                f"{mode} agent pool must be between {low} and 1000."
            )
        pool_type = properties.setdefault("type", "VirtualMachineScaleSets")
        if pool_type not in ("VirtualMachineScaleSets", "AvailabilitySet"):
            raise _bad(f"The value of parameter agentPoolProfile.type is invalid: '{pool_type}'.")
        os_type = properties.setdefault("osType", "Linux")
        if os_type not in ("Linux", "Windows"):
            raise _bad(f"The value of parameter agentPoolProfile.osType is invalid: '{os_type}'.")
        os_sku = properties.setdefault("osSKU", "Ubuntu")
        if not isinstance(os_sku, str) or os_sku.lower() not in _OS_SKUS:
            raise _bad(f"The value of parameter agentPoolProfile.osSKU is invalid: '{os_sku}'.")
        disk = properties.get("osDiskSizeGB", 0)
        if not isinstance(disk, int) or isinstance(disk, bool) or (disk != 0 and not 30 <= disk <= 2048):
            raise _bad(
                f"The value of parameter agentPoolProfile.osDiskSizeGB is invalid: {disk!r}. It must be 0 "
                "(the default for the VM size) or between 30 and 2048."
            )
        for taint in properties.get("nodeTaints") or []:
            if not isinstance(taint, str) or not _TAINT.match(taint):
                raise _bad(
                    f"Taint '{taint}' is invalid: taints must be in the format key=value:Effect with "
                    "Effect one of NoSchedule, PreferNoSchedule, NoExecute."
                )
        for key, value in (properties.get("nodeLabels") or {}).items():
            if key.startswith("kubernetes.azure.com/"):
                raise _bad(f"Label key '{key}' is invalid: the prefix kubernetes.azure.com is reserved.")
            if not isinstance(value, str):
                raise _bad(f"Label '{key}' has a value that is not a string.")
        for tag in properties.get("tags") or {}:
            if set(tag) & _FORBIDDEN_TAG_CHARACTERS:
                raise _bad(
                    f"The tag name '{tag}' has invalid characters '<,>,%,&,\\,?,/'. Please remove invalid "
                    "characters and try again.",
                    code="InvalidTagNameCharacters",
                )
        properties.setdefault("osDiskType", "Managed")
        properties.setdefault("maxPods", 110)
        properties.setdefault("orchestratorVersion", _ORCHESTRATOR_VERSION)
        properties.setdefault("nodeImageVersion", _NODE_IMAGE_VERSION)
        properties.setdefault("enableNodePublicIP", False)
        for read_only in ("provisioningState", "powerState", "currentOrchestratorVersion"):
            properties.pop(read_only, None)
        return properties

    # --- writes ---------------------------------------------------------------------------------
    def _start_operation(self, kind: OperationKind, pool: AgentPoolRecord) -> AsyncOperation:
        operation = AsyncOperation(id=f"op{next(self._operation_ids):06d}", kind=kind, pool=pool.name)
        self.operations[operation.id] = operation
        pool.operation_id = operation.id
        return operation

    def _running(self, pool: AgentPoolRecord) -> AsyncOperation | None:
        operation = self.operations.get(pool.operation_id or "")
        return operation if operation is not None and not operation.finished else None

    def _spawn(self, operation: AsyncOperation, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work, name=f"aks-simulator-{operation.id}")
        self._tasks[operation.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(operation.id, None))

    def put(self, name: str, body: Any) -> tuple[int, AgentPoolRecord, AsyncOperation]:
        """Create or update a pool. Returns (201 create | 200 update, the pool, its operation)."""
        properties = self._validated_properties(name, body)
        existing = self.pools.get(name.lower())
        if existing is not None:
            running = self._running(existing)
            if running is not None:
                verb = {
                    "create": "create node pool",
                    "update": "update node pool",
                    "delete": "delete node pool",
                }
                raise ArmError(
                    409,
                    "OperationNotAllowed",
                    f"Operation is not allowed because there's an in progress {verb[running.kind]} "
                    f"operation (operation id {running.id}) on agent pool '{existing.name}'. Please wait "
                    "for it to finish before starting a new operation.",
                )
            if existing.provisioning_state != "Failed":
                for immutable in _IMMUTABLE:
                    old, new = existing.properties.get(immutable), properties.get(immutable)
                    if immutable in properties and str(old).lower() != str(new).lower():
                        raise ArmError(
                            400,
                            "PropertyChangeNotAllowed",
                            f"Changing property '{immutable}' is not allowed.",
                        )
                existing.properties = properties
                existing.provisioning_state = "Updating"
                operation = self._start_operation("update", existing)
                self._spawn(operation, self._finish_update(existing, operation))
                return 200, existing, operation
        digits = str(int(hashlib.sha256(f"{self.config.cluster_name}/{name}".encode()).hexdigest(), 16))[:8]
        pool = AgentPoolRecord(name=name, properties=properties, provisioning_state="Creating", vmss_digits=digits)
        self.pools[name.lower()] = pool
        operation = self._start_operation("create", pool)
        failure = self.take_fault("PUT", name, asynchronous=True)
        self._spawn(operation, self._finish_create(pool, operation, failure))
        return 201, pool, operation

    def delete(self, name: str) -> tuple[AgentPoolRecord, AsyncOperation]:
        pool = self._pool(name)
        running = self._running(pool)
        if running is not None and running.kind == "delete":
            return pool, running
        if running is not None:
            # AKS cancels the create or update that a delete overtakes.
            task = self._tasks.get(running.id)
            if task is not None:
                task.cancel()
            running.finish(
                "Canceled",
                {
                    "code": "OperationCanceled",
                    "message": "The operation was canceled by a delete of the pool.",
                },
            )
        pool.provisioning_state = "Deleting"
        operation = self._start_operation("delete", pool)
        failure = self.take_fault("DELETE", name, asynchronous=True)
        self._spawn(operation, self._finish_delete(pool, operation, failure))
        return pool, operation

    async def _finish_create(self, pool: AgentPoolRecord, operation: AsyncOperation, failure: Fault | None) -> None:
        await asyncio.sleep(self.config.provisioning_delay_s)
        if failure is not None:
            _fail(pool, operation, failure.code, failure.message)
            return
        if self.registrar is not None:
            try:
                pool.node_names = [await self._register_node(self.registrar, pool)]
            except Exception as error:  # the simulated VM failed to join: report it as AKS would
                log.exception("simulator: registering the node of pool %s failed", pool.name)
                _fail(pool, operation, "VMExtensionProvisioningError", f"Node did not join: {error}")
                return
        pool.provisioning_state = "Succeeded"
        operation.finish("Succeeded")

    async def _register_node(self, registrar: NodeRegistrar, pool: AgentPoolRecord) -> str:
        cfg = self.config
        node_name = f"{pool.vmss_name}000000"
        provider_id = (
            f"azure:///subscriptions/{cfg.subscription_id}/resourceGroups/"
            f"{cfg.effective_node_resource_group.lower()}/providers/Microsoft.Compute/"
            f"virtualMachineScaleSets/{pool.vmss_name}/virtualMachines/0"
        )
        await registrar.register(
            node_manifest(
                node_name=node_name,
                provider_id=provider_id,
                pool=pool.name,
                properties=pool.properties,
                location=cfg.location,
                node_resource_group=cfg.effective_node_resource_group,
            )
        )
        return node_name

    async def _finish_update(self, pool: AgentPoolRecord, operation: AsyncOperation) -> None:
        await asyncio.sleep(min(self.config.provisioning_delay_s, 0.2))
        pool.provisioning_state = "Succeeded"
        operation.finish("Succeeded")

    async def _finish_delete(self, pool: AgentPoolRecord, operation: AsyncOperation, failure: Fault | None) -> None:
        await asyncio.sleep(self.config.deletion_delay_s)
        if failure is not None:
            _fail(pool, operation, failure.code, failure.message)
            return
        if self.registrar is not None:
            try:
                await self.registrar.remove_pool_nodes(pool.name)
            except Exception as error:
                log.exception("simulator: removing the nodes of pool %s failed", pool.name)
                _fail(pool, operation, "InternalOperationError", str(error))
                return
        self.pools.pop(pool.name.lower(), None)
        operation.finish("Succeeded")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
