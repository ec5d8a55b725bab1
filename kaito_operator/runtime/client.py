"""A small, generic Kubernetes REST client on top of kubernetes-asyncio's ``ApiClient``.

Why not the generated API classes: they differ between core and custom resources, return models
for one and dicts for the other, default custom-object patches to a content type the API server
rejects, and have no timeouts by default. This client speaks JSON dicts for every resource, puts a
timeout on every call, limits the request rate (QPS with a burst), counts requests by verb and
resource in the runtime metrics, and turns every failure into an ``ApiError`` (see errors.py). Authentication,
TLS and token refresh stay with the ``ApiClient`` and its ``Configuration``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Literal

import aiohttp

from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import ResourceKind
from kaito_operator.runtime.metrics import RuntimeMetrics, current_controller

PatchType = Literal["merge", "json", "strategic", "apply"]
_CONTENT_TYPES: dict[PatchType, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}


class TokenBucket:
    """Client-side rate limit: ``qps`` requests per second on average, bursts up to ``burst``."""

    def __init__(self, qps: float, burst: int, clock: Clock) -> None:
        self._qps = qps
        self._burst = max(1, burst)
        self._clock = clock
        self._tokens = float(self._burst)
        self._updated: float | None = None
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self._qps <= 0:
            return  # unlimited
        async with self._lock:
            while True:
                now = self._clock.monotonic()
                if self._updated is not None:
                    self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._qps)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await self._clock.sleep((1 - self._tokens) / self._qps)


def label_selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


class KubeClient:
    """Generic CRUD, list, watch and server-side apply on plain dicts.

    Every method raises ``ApiError`` on failure; status 0 means no answer (timeout, connection).
    """

    def __init__(
        self,
        api: Any,
        *,
        clock: Clock,
        metrics: RuntimeMetrics,
        qps: float = 50.0,
        burst: int = 100,
        timeout: float = 30.0,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._timeout = timeout
        self._limiter = TokenBucket(qps, burst, clock)

    @property
    def api_client(self) -> Any:
        return self._api

    # --- plumbing --------------------------------------------------------------------------------
    async def _send(
        self,
        verb: str,
        method: str,
        kind: ResourceKind,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        client_timeout: aiohttp.ClientTimeout | None = None,
        subresource: str = "",
    ) -> Any:
        """Send one request; returns the raw aiohttp response (status already checked)."""
        await self._limiter.acquire()
        code = "0"
        try:
            response = await self._api.call_api(
                path,
                method,
                query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=client_timeout or aiohttp.ClientTimeout(total=self._timeout),
            )
            code = str(response.status)
            if not 200 <= response.status < 300:
                try:
                    data = await response.read()
                finally:
                    response.release()
                raise ApiError.from_response(response.status, data, response.headers, verb=verb, path=path)
            return response
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(0, type(error).__name__, str(error) or "no response", verb=verb, path=path) from error
        finally:
            self._metrics.api_requests.labels(verb, kind.group, kind.plural, subresource, code).inc()
            self._metrics.api_requests_by_controller.labels(current_controller.get(), verb).inc()

    async def _call(
        self,
        verb: str,
        method: str,
        kind: ResourceKind,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        subresource: str = "",
    ) -> dict[str, Any]:
        # The aiohttp timeout covers connect and read; the outer one also bounds auth refresh.
        try:
            async with asyncio.timeout(self._timeout + 5):
                response = await self._send(
                    verb, method, kind, path, query=query, body=body, content_type=content_type, subresource=subresource
                )
                try:
                    data = await response.read()
                finally:
                    response.release()
        except TimeoutError as error:
            raise ApiError(0, "Timeout", f"no answer within {self._timeout}s", verb=verb, path=path) from error
        except aiohttp.ClientError as error:
            raise ApiError(0, type(error).__name__, str(error), verb=verb, path=path) from error
        if not data:
            return {}
        result: dict[str, Any] = json.loads(data)
        return result

    # --- reads -------------------------------------------------------------------------------------
    async def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self._call("get", "GET", kind, kind.path(namespace, name))

    async def list(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        page_size: int = 500,
    ) -> tuple[list[dict[str, Any]], str]:
        """Every object (following continue tokens) and the list's resourceVersion."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            query = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if field_selector:
                query.append(("fieldSelector", field_selector))
            if token:
                query.append(("continue", token))
            page = await self._call("list", "GET", kind, kind.path(namespace), query=query)
            for item in page.get("items") or []:
                # List items omit apiVersion/kind; fill them so objects look the same as watched ones.
                item.setdefault("apiVersion", kind.api_version)
                item.setdefault("kind", kind.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    async def watch(
        self,
        kind: ResourceKind,
        namespace: str | None = None,
        *,
        resource_version: str,
        timeout_seconds: int,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Watch events from ``resource_version`` until the server ends the stream.

        Yields {"type": ADDED|MODIFIED|DELETED|BOOKMARK, "object": {...}}. An ERROR event becomes an
        ``ApiError`` (status 410 when the resourceVersion is too old: the caller must re-list).
        The read timeout is a little longer than the server-side timeout, so a silently dead
        connection cannot hang the watch for ever.
        """
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if label_selector:
            query.append(("labelSelector", label_selector))
        if field_selector:
            query.append(("fieldSelector", field_selector))
        path = kind.path(namespace)
        timeout = aiohttp.ClientTimeout(
            connect=self._timeout, sock_connect=self._timeout, sock_read=timeout_seconds + 30
        )
        response = await self._send("watch", "GET", kind, path, query=query, client_timeout=timeout)
        try:
            async for line in response.content:
                if not line.strip():
                    continue
                try:
                    event = json.loads(line)
                except ValueError as error:  # a line cut short: resume the watch, do not crash the informer
                    raise ApiError(0, "MalformedEvent", str(error), verb="watch", path=path) from error
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(
                        int(status.get("code") or 0),
                        str(status.get("reason") or ""),
                        str(status.get("message") or ""),
                        verb="watch",
                        path=path,
                    )
                yield event
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ApiError(
                0, type(error).__name__, str(error) or "watch stream broke", verb="watch", path=path
            ) from error
        finally:
            response.close()

    # --- writes ------------------------------------------------------------------------------------
    async def create(self, kind: ResourceKind, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """POST ``obj``; ``dry_run``: the server validates and admits it (admission included) but stores nothing."""
        namespace = (obj.get("metadata") or {}).get("namespace")
        query = [("dryRun", "All")] if dry_run else None
        return await self._call("create", "POST", kind, kind.path(namespace), query=query, body=obj)

    async def create_subresource(
        self, kind: ResourceKind, name: str, subresource: str, body: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """POST to a subresource, e.g. a Pod's ``eviction`` (a policy/v1 Eviction, which the API server
        refuses with 429 while a PodDisruptionBudget forbids it)."""
        return await self._call(
            "create", "POST", kind, kind.path(namespace, name, subresource), body=body, subresource=subresource
        )

    async def replace(self, kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; with metadata.resourceVersion set, a concurrent change is a 409."""
        meta = obj["metadata"]
        return await self._call("update", "PUT", kind, kind.path(meta.get("namespace"), meta["name"]), body=obj)

    async def apply(
        self,
        kind: ResourceKind,
        obj: dict[str, Any],
        *,
        field_manager: str,
        subresource: str | None = None,
        force: bool = True,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Server-side apply: ``obj`` is the full intent of ``field_manager`` for this object.
        ``dry_run``: validate and default it (admission included) without storing anything."""
        meta = obj["metadata"]
        path = kind.path(meta.get("namespace"), meta["name"], subresource)
        query = [("fieldManager", field_manager), ("force", "true" if force else "false")]
        if dry_run:
            query.append(("dryRun", "All"))
        return await self._call(
            "apply",
            "PATCH",
            kind,
            path,
            query=query,
            body=obj,
            content_type=_CONTENT_TYPES["apply"],
            subresource=subresource or "",
        )

    async def patch(
        self,
        kind: ResourceKind,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: Literal["merge", "json", "strategic"] = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        query = [("fieldManager", field_manager)] if field_manager else None
        return await self._call(
            "patch",
            "PATCH",
            kind,
            kind.path(namespace, name, subresource),
            query=query,
            body=patch,
            content_type=_CONTENT_TYPES[patch_type],
            subresource=subresource or "",
        )

    async def delete(
        self,
        kind: ResourceKind,
        name: str,
        namespace: str | None = None,
        *,
        propagation: Literal["Background", "Foreground", "Orphan"] = "Background",
        precondition_uid: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if precondition_uid:
            body["preconditions"] = {"uid": precondition_uid}
        return await self._call("delete", "DELETE", kind, kind.path(namespace, name), body=body)
