"""Kubernetes Events (core/v1) about objects, as ``kubectl describe`` shows them.

``EventRecorder.normal/warning(obj, reason, message)`` posts an Event for ``obj``. A repeat of the
same (object, type, reason, message) bumps ``count`` and ``lastTimestamp`` of the existing Event
instead of creating another, as client-go's recorder does. Recording never fails the caller: an
Event is a courtesy to humans, so API errors are logged and dropped.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any, Literal

from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import EVENT

log = logging.getLogger(__name__)

EventKind = Literal["Normal", "Warning"]
_MAX_REMEMBERED = 4096
_MAX_MESSAGE = 1024


class EventRecorder:
    def __init__(self, client: KubeClient, clock: Clock, *, component: str, instance: str = "") -> None:
        self._client = client
        self._clock = clock
        self._component = component
        self._instance = instance or component
        # (event name) -> count, for the aggregation of repeats; bounded, oldest forgotten first.
        self._counts: OrderedDict[str, int] = OrderedDict()

    async def normal(self, obj: dict[str, Any], reason: str, message: str) -> None:
        await self.record(obj, "Normal", reason, message)

    async def warning(self, obj: dict[str, Any], reason: str, message: str) -> None:
        await self.record(obj, "Warning", reason, message)

    async def record(
        self, obj: dict[str, Any], kind: EventKind, reason: str, message: str, *, _retried: bool = False
    ) -> None:
        meta = obj.get("metadata") or {}
        # Events of cluster-scoped objects (Machines, Nodes) live in "default", as kubectl expects.
        namespace = meta.get("namespace") or "default"
        message = message[:_MAX_MESSAGE]
        digest = hashlib.sha256(f"{meta.get('uid')}|{kind}|{reason}|{message}".encode()).hexdigest()[:16]
        name = f"{meta.get('name', 'unknown')}.{digest}"
        now = self._clock.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")
        try:
            count = self._counts.get(name)
            if count is None:
                try:
                    await self._client.create(
                        EVENT,
                        self._event(
                            obj,
                            namespace=namespace,
                            name=name,
                            kind=kind,
                            reason=reason,
                            message=message,
                            now=now,
                        ),
                    )
                    count = 1
                except ApiError as error:
                    if not error.already_exists:
                        raise
                    # Made before a restart (or by another replica): continue its count.
                    existing = await self._client.get(EVENT, name, namespace)
                    count = await self._bump(name, namespace, int(existing.get("count") or 1), now)
            else:
                count = await self._bump(name, namespace, count, now)
        except ApiError as error:
            self._counts.pop(name, None)
            if error.not_found and count is not None and not _retried:
                return await self.record(obj, kind, reason, message, _retried=True)  # it expired (TTL)
            log.warning("could not record event %s on %s: %s", reason, meta.get("name"), error)
            return
        self._counts[name] = count
        self._counts.move_to_end(name)
        while len(self._counts) > _MAX_REMEMBERED:
            self._counts.popitem(last=False)

    async def _bump(self, name: str, namespace: str, count: int, now: str) -> int:
        await self._client.patch(EVENT, name, {"count": count + 1, "lastTimestamp": now}, namespace=namespace)
        return count + 1

    def _event(
        self,
        obj: dict[str, Any],
        *,
        namespace: str,
        name: str,
        kind: EventKind,
        reason: str,
        message: str,
        now: str,
    ) -> dict[str, Any]:
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if meta.get("namespace"):
            involved["namespace"] = meta["namespace"]
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {k: v for k, v in involved.items() if v},
            "type": kind,
            "reason": reason,
            "message": message,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
        }
