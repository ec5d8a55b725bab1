"""Resource kinds and object keys: what the runtime needs to address any API resource.

A ``ResourceKind`` names a resource (core or custom, namespaced or cluster-scoped) and builds its
REST paths, so the client, informers and controllers are generic over resources. Objects are
plain dicts, exactly as the API server sends them. ``ObjectKey`` (namespace, name) is the unit of
work; cluster-scoped objects have namespace "".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple


@dataclass(frozen=True)
class ResourceKind:
    group: str
    """API group; "" for the core group (pods, services, nodes, events)."""
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        """The REST path. ``namespace=None`` on a namespaced kind means "all namespaces"."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


class ObjectKey(NamedTuple):
    namespace: str
    """"" for cluster-scoped objects."""
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def key_of(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return ObjectKey(meta.get("namespace") or "", meta.get("name") or "")


# --- Core kinds ---------------------------------------------------------------------------------
NODE: Final = ResourceKind("", "v1", "Node", "nodes", namespaced=False)
POD: Final = ResourceKind("", "v1", "Pod", "pods", namespaced=True)
SERVICE: Final = ResourceKind("", "v1", "Service", "services", namespaced=True)
EVENT: Final = ResourceKind("", "v1", "Event", "events", namespaced=True)
NAMESPACE: Final = ResourceKind("", "v1", "Namespace", "namespaces", namespaced=False)
DEPLOYMENT: Final = ResourceKind("apps", "v1", "Deployment", "deployments", namespaced=True)
STATEFULSET: Final = ResourceKind("apps", "v1", "StatefulSet", "statefulsets", namespaced=True)
LEASE: Final = ResourceKind("coordination.k8s.io", "v1", "Lease", "leases", namespaced=True)
SECRET: Final = ResourceKind("", "v1", "Secret", "secrets", namespaced=True)
VALIDATING_WEBHOOK_CONFIGURATION: Final = ResourceKind(
    "admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", False
)
