"""The garbage collector's sweep, with stand-ins for the cloud, the informers and the API server:
one pool whose node cannot be deleted must not stop (or orphan) the collection of the others."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from gpu_provisioner.cloudprovider import Instance, Operation
from gpu_provisioner.gc import GC_KEY, GarbageCollector
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.runtime import ApiError, FakeClock, Result


class _Store:
    def __init__(self, nodes_by_pool: dict[str, list[dict[str, Any]]]) -> None:
        self._nodes_by_pool = nodes_by_pool

    def keys(self) -> list[Any]:
        return []  # no Machines: every pool of ours is an orphan

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        return self._nodes_by_pool.get(value, [])

    # Defined last: inside the class body the name `list` means this method.
    def list(self) -> list[dict[str, Any]]:
        return []


class _Informer:
    def __init__(self, nodes_by_pool: dict[str, list[dict[str, Any]]] | None = None) -> None:
        self.store = _Store(nodes_by_pool or {})

    def add_indexer(self, name: str, function: Any) -> None:
        pass


class _Kube:
    async def delete(self, kind: Any, name: str) -> None:
        raise ApiError(403, "Forbidden", f"nodes {name} is forbidden", verb="DELETE", path=f"/api/v1/nodes/{name}")


class _Cloud:
    def __init__(self, pools: list[Instance]) -> None:
        self.pools = pools
        self.deleted: list[str] = []

    async def list(self) -> list[Instance]:
        return self.pools

    async def delete(self, name: str) -> Operation:
        self.deleted.append(name)
        return Operation(kind="delete", name=name, token="t")


def _ours(name: str) -> Instance:
    tags = {"kaito-py-cluster": "c", "kaito-py-machine": name, "kaito-py-created-at": "2023-01-01T00:00:00Z"}
    return Instance(name=name, vm_size="Standard_NC12s_v3", provisioning_state="Succeeded", tags=tags)


async def test_a_failing_node_delete_does_not_stop_the_sweep() -> None:
    cloud = _Cloud([_ours("stuck1"), _ours("free1")])
    collector = GarbageCollector(
        client=cast(Any, _Kube()),
        machines=cast(Any, _Informer()),
        nodes=cast(Any, _Informer({"stuck1": [{"metadata": {"name": "aks-stuck1-1-vmss000000"}}]})),
        cloud=cast(Any, cloud),
        clock=FakeClock(datetime(2024, 1, 1, tzinfo=UTC)),
        settings=ProvisionerSettings(gc_interval_s=120),
        cluster_name="c",
    )
    assert await collector.reconcile(GC_KEY) == Result(120)
    assert cloud.deleted == ["free1"], "the other orphan was collected; the stuck one waits for the next sweep"
    assert collector.collected == ["free1"]
