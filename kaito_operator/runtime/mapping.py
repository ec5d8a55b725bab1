"""Mappers: from a watch event on any object to the keys of the objects that must be reconciled.

A controller watches its own kind (``map_to_self``), the children it owns (``map_to_owner``:
the controller ownerReference), and related objects that point at it by labels
(``map_by_labels``: e.g. cluster-scoped Machines that cannot carry a namespaced owner reference).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kaito_operator.runtime.kinds import ObjectKey, ResourceKind, key_of

if TYPE_CHECKING:
    from kaito_operator.runtime.informer import WatchEvent

Mapper = Callable[["WatchEvent"], Iterable[ObjectKey]]


def map_to_self(event: WatchEvent) -> Iterable[ObjectKey]:
    return [key_of(event.obj)]


def _group(ref: dict[str, str]) -> str:
    api_version = str(ref.get("apiVersion", ""))
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def map_to_owner(owner_kind: ResourceKind) -> Mapper:
    """The object's controller owner of ``owner_kind`` (same namespace, as owner references require)."""

    def mapper(event: WatchEvent) -> Iterable[ObjectKey]:
        meta = event.obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") == owner_kind.kind and _group(ref) == owner_kind.group:
                namespace = (meta.get("namespace") or "") if owner_kind.namespaced else ""
                return [ObjectKey(namespace, ref["name"])]
        return []

    return mapper


def map_by_labels(name_label: str, namespace_label: str | None = None) -> Mapper:
    """The object named by label ``name_label`` (in the namespace in ``namespace_label``, or the
    object's own namespace)."""

    def mapper(event: WatchEvent) -> Iterable[ObjectKey]:
        meta = event.obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        name = labels.get(name_label)
        if not name:
            return []
        namespace = labels.get(namespace_label, "") if namespace_label else meta.get("namespace") or ""
        return [ObjectKey(namespace, name)]

    return mapper
