"""The cloud-provider protocol: the only way the Machine lifecycle and the garbage collector touch
a cloud. AKS agent pools are one implementation (``aks.py``); tests may plug in others.

Every method raises the failure kinds of ``errors.py`` and nothing else a caller must know about.
Long-running work (create, delete) is split into *start* and *poll*, so a reconcile never waits
for a cloud operation: it starts one, stores the returned :class:`Operation` (its ``token`` is
plain text that survives a restart), and later asks :meth:`CloudProvider.poll` once per reconcile
whether it has finished.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

OperationKind = Literal["create", "delete"]


@dataclass(frozen=True)
class InstanceSpec:
    """What to create: one node's worth of cloud capacity (for AKS, a one-node agent pool)."""

    name: str
    vm_size: str
    os_sku: str
    os_disk_size_gb: int
    """0 means the cloud's default for the VM size."""
    labels: Mapping[str, str]
    taints: tuple[str, ...]
    """Rendered as ``key=value:Effect``."""
    tags: Mapping[str, str]


@dataclass(frozen=True)
class Instance:
    """What the cloud reports about an instance."""

    name: str
    vm_size: str
    provisioning_state: str
    """The cloud's own word, e.g. ``Creating``, ``Succeeded``, ``Deleting``, ``Failed``."""
    labels: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def deleting(self) -> bool:
        return "deleting" in self.provisioning_state.lower()


@dataclass(frozen=True)
class Operation:
    """A started long-running operation. ``token`` is opaque text that resumes it after a restart."""

    kind: OperationKind
    name: str
    token: str


@dataclass(frozen=True)
class OperationProgress:
    """One look at an operation: ``done`` with the created instance (create) or ``None`` (delete),
    or still running, with how long the cloud suggests waiting before looking again."""

    done: bool
    instance: Instance | None = None
    retry_after: float | None = None


class CloudProvider(Protocol):
    """A cloud that makes one node per named instance.

    Contract, shared by every implementation:

    * Names are the identity: ``create`` of an existing name updates (or leaves) it, never makes a
      second one. Callers derive the name from their object, so a retry finds what it made.
    * ``create`` and ``delete`` only *start* work; each call sends at most a few requests and
      returns promptly (bounded by the provider's request timeout).
    * Failures are the classes of ``errors.py``; ``permanent`` ones mean the same request will fail
      again, so callers must not repeat it until their input changes.
    """

    async def create(self, spec: InstanceSpec) -> Operation:
        """Start creating (or updating) the instance ``spec.name``.

        Raises ``OperationInProgress`` if another operation on that instance is running (for a
        create started earlier by us: wait for the instance instead), ``QuotaExceeded``,
        ``SkuNotAllowed``, ``InvalidParameters``, ``InsufficientCapacity`` (permanent), or
        ``Transient`` / ``Unauthorized``.
        """
        ...

    async def delete(self, name: str) -> Operation:
        """Start deleting the instance ``name``.

        Raises ``NotFound`` if there is no such instance: for a caller that wants it gone, that
        means done. Raises ``OperationInProgress`` when the cloud refuses because another
        operation runs on it.
        """
        ...

    async def poll(self, operation: Operation) -> OperationProgress:
        """Look once at a started operation (at most a couple of requests; never waits for it).

        When a create finishes, returns the instance. When it failed, raises the failure kind
        (e.g. ``InsufficientCapacity`` for an allocation failure, ``OperationFailed`` otherwise).
        A delete whose instance is already gone is done. A token this provider cannot read raises
        ``UnreadableOperation`` (callers then forget it and look at the instance again).
        """
        ...

    async def get(self, name: str) -> Instance:
        """The instance ``name``; raises ``NotFound`` if it does not exist."""
        ...

    async def list(self) -> list[Instance]:
        """Every instance in the cluster, ours or not (callers filter by ``tags``)."""
        ...
