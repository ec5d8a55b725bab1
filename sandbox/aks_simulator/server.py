"""The simulator's HTTPS server: ARM agentPools routes with the LRO protocol, the Entra ID token
endpoint, bearer checks, fault injection, a request record, and admin routes under ``/_admin``.

Use it in-process as ``async with AksSimulator(SimulatorConfig(...)) as sim: ...`` or as a
process with ``python -m sandbox.aks_simulator``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from pydantic import ValidationError

from sandbox.aks_simulator import tls
from sandbox.aks_simulator.agentpools import ArmError, AsyncOperation, SimulatedCluster
from sandbox.aks_simulator.config import Fault, FaultTarget, SimulatorConfig
from sandbox.aks_simulator.entra import TokenIssuer, TokenRefused
from sandbox.aks_simulator.nodes import NodeRegistrar

log = logging.getLogger(__name__)
_CONFIG_FIELDS_ADMIN_MAY_SET = {
    "provisioning_delay_s",
    "deletion_delay_s",
    "retry_after_s",
    "allowed_vm_sizes",
    "list_page_size",
    "token_lifetime_s",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request the simulator served."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    """Parsed JSON, the form fields of a token request, or text; None when empty."""
    time: float
    """Wall-clock seconds (time.time()) when the request arrived."""
    status: int
    target: str | None
    """PUT / GET / DELETE / LIST / OPERATION / TOKEN / ADMIN, or None for unknown routes."""
    pool: str | None
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Route:
    target: str
    pool: str | None = None
    operation_id: str | None = None
    operation_results: bool = False
    tenant: str | None = None


_ROUTE = web.RequestKey("route", _Route)


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


def _arm_error(error: ArmError) -> web.Response:
    headers = {"x-ms-failure-cause": "gateway" if error.status in (401, 429) else "service"}
    if error.retry_after is not None:
        headers["Retry-After"] = f"{error.retry_after:g}"
    if error.status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer authorization_uri="https://login.microsoftonline.com/", error="invalid_token", '
            f'error_description="{error.message}"'
        )
    return _json(error.status, error.body(), headers)


class AksSimulator:
    """An AKS agent-pool API and Entra ID token endpoint on one local HTTPS port."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.requests: list[RecordedRequest] = []
        self.tokens = TokenIssuer(self.config)
        self._registrar = NodeRegistrar(self.config.kubeconfig) if self.config.kubeconfig else None
        self.cluster = SimulatedCluster(self.config, registrar=self._registrar)
        self._runner: web.AppRunner | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.tls: tls.TlsFiles | None = None
        self.port: int | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> AksSimulator:
        tls_dir = self.config.tls_dir
        if tls_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="aks-simulator-")
            tls_dir = Path(self._tmp.name)
        self.tls = await asyncio.to_thread(tls.generate, tls_dir)
        if self._registrar is not None:
            await self._registrar.start()
        app = web.Application(middlewares=[self._record])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=self.tls.server_context())
        await site.start()
        server = site._server
        if not isinstance(server, asyncio.Server):  # aiohttp keeps its listening server private
            raise RuntimeError(f"aiohttp's TCPSite has no asyncio.Server after start(): {server!r}")
        self.port = int(server.sockets[0].getsockname()[1])
        log.info("AKS simulator listening on %s", self.endpoint)
        return self

    async def stop(self) -> None:
        await self.cluster.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._registrar is not None:
            await self._registrar.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def __aenter__(self) -> AksSimulator:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- what clients need ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Base URL of both ARM and the Entra ID authority, e.g. https://127.0.0.1:40123."""
        if self.port is None:
            raise RuntimeError("the simulator is not started")
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"https://{host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        if self.tls is None:
            raise RuntimeError("the simulator is not started")
        return self.tls.ca_cert

    def operator_environment(self, federated_token_file: Path) -> dict[str, str]:
        """The environment a provisioner needs to talk to this simulator (gpu-provisioner's names
        plus the workload-identity variables and our two sandbox overrides)."""
        cfg = self.config
        return {
            "ARM_SUBSCRIPTION_ID": cfg.subscription_id,
            "ARM_RESOURCE_GROUP": cfg.resource_group,
            "AZURE_CLUSTER_NAME": cfg.cluster_name,
            "LOCATION": cfg.location,
            "ARM_ENDPOINT": self.endpoint,
            "AZURE_CA_BUNDLE": str(self.ca_path),
            "AZURE_CLIENT_ID": cfg.client_id,
            "AZURE_TENANT_ID": cfg.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": str(federated_token_file),
            "AZURE_AUTHORITY_HOST": self.endpoint,
        }

    def write_federated_token(self, path: Path) -> Path:
        """Write the service-account token the token endpoint accepts, as the AKS webhook would."""
        path.write_text(self.config.federated_token)
        return path

    # --- test knobs -------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        self.cluster.faults.append(fault)

    def clear_faults(self) -> None:
        self.cluster.faults.clear()

    def requests_for(self, target: str, pool: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.target == target and (pool is None or (r.pool or "").lower() == pool.lower())
        ]

    # --- HTTP -------------------------------------------------------------------------------------
    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started, wall = time.monotonic(), time.time()
        raw = await request.read()  # aiohttp caches the body, so handlers can read it again
        try:
            response = await handler(request)
        except web.HTTPException as error:
            response = error
        route = request.get(_ROUTE)
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                body=_decode_body(raw, request.content_type),
                time=wall,
                status=response.status,
                target=route.target if route else None,
                pool=route.pool if route else None,
                duration_s=time.monotonic() - started,
            )
        )
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def _route(self, request: web.Request) -> _Route | None:
        cfg = self.config
        parts = [p for p in request.path.split("/") if p]
        lower = [p.lower() for p in parts]
        if lower[:1] == ["_admin"]:
            return _Route(target="ADMIN", pool="/".join(lower[1:]) or None)
        if len(parts) == 4 and lower[1:] == ["oauth2", "v2.0", "token"]:
            return _Route(target="TOKEN", tenant=parts[0])
        if (
            len(parts) == 8
            and lower[0] == "subscriptions"
            and lower[2:6] == ["providers", "microsoft.containerservice", "locations", cfg.location.lower()]
            and lower[6] in ("operations", "operationresults")
        ):
            return _Route(target="OPERATION", operation_id=parts[7], operation_results=lower[6] == "operationresults")
        if (
            len(parts) in (9, 10)
            and lower[0] == "subscriptions"
            and lower[2] == "resourcegroups"
            and lower[4:7] == ["providers", "microsoft.containerservice", "managedclusters"]
            and lower[8] == "agentpools"
        ):
            if len(parts) == 9:
                return _Route(target="LIST")
            return _Route(target=request.method.upper(), pool=parts[9])
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route = self._route(request)
        if route is None:
            return _arm_error(ArmError(404, "InvalidResourceType", f"No route for {request.method} {request.path}."))
        request[_ROUTE] = route
        if route.target == "ADMIN":
            return await self._admin(request, route)
        if route.target == "TOKEN":
            return await self._token(request, route)
        try:
            return await self._arm(request, route)
        except ArmError as error:
            return _arm_error(error)

    def _check_scope(self, request: web.Request) -> None:
        """Subscription, resource group and cluster must be the simulated ones (case-insensitively)."""
        cfg = self.config
        parts = [p for p in request.path.split("/") if p]
        if parts[1].lower() != cfg.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{parts[1]}' could not be found.")
        if len(parts) > 3 and parts[2].lower() == "resourcegroups":
            if parts[3].lower() != cfg.resource_group.lower():
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{parts[3]}' could not be found.")
            if parts[7].lower() != cfg.cluster_name.lower():
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource 'Microsoft.ContainerService/managedClusters/{parts[7]}' under resource "
                    f"group '{parts[3]}' was not found.",
                )

    async def _arm(self, request: web.Request, route: _Route) -> web.Response:
        refused = self.tokens.check(request.headers.get("Authorization"))
        if refused is not None:
            code = "AuthenticationFailed" if "missing" in refused else "InvalidAuthenticationToken"
            raise ArmError(401, code, refused)
        self._check_scope(request)
        api_version = request.query.get("api-version")
        if not api_version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        target: FaultTarget = route.target  # type: ignore[assignment]
        fault = self.cluster.take_fault(target, route.pool)
        if fault is not None:
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            raise ArmError(fault.status, fault.code, fault.message, retry_after=fault.retry_after)
        origin = f"{request.scheme}://{request.host}"
        if route.target == "OPERATION" and route.operation_id is not None:
            return self._operation_status(route.operation_id, route.operation_results, origin, api_version)
        if route.target == "LIST":
            return self._list(request)
        if route.pool is None:  # _route gives every other ARM route its pool
            raise RuntimeError(f"simulator route without an agent pool: {route}")
        if route.target == "GET":
            return _json(200, self.cluster.get(route.pool))
        if route.target == "PUT":
            try:
                body = json.loads(await request.text() or "null")
            except json.JSONDecodeError as error:
                raise ArmError(
                    400,
                    "InvalidRequestContent",
                    f"The request content was invalid and could not be deserialized: {error}.",
                ) from error
            status, pool, operation = self.cluster.put(route.pool, body)
            return _json(status, self.cluster.pool_wire(pool), self._lro_headers(operation, origin, api_version))
        if route.target == "DELETE":
            _, operation = self.cluster.delete(route.pool)
            return web.Response(status=202, headers=self._lro_headers(operation, origin, api_version))
        raise ArmError(405, "MethodNotAllowed", f"{request.method} is not supported on an agent pool.")

    def _lro_headers(self, operation: AsyncOperation, origin: str, api_version: str) -> dict[str, str]:
        cfg = self.config
        base = (
            f"{origin}/subscriptions/{cfg.subscription_id}/providers/Microsoft.ContainerService"
            f"/locations/{cfg.location}"
        )
        return {
            "Azure-AsyncOperation": f"{base}/operations/{operation.id}?api-version={api_version}",
            "Location": f"{base}/operationresults/{operation.id}?api-version={api_version}",
            "Retry-After": str(cfg.retry_after_s),
        }

    def _operation_status(self, operation_id: str, results: bool, origin: str, api_version: str) -> web.Response:
        operation = self.cluster.operation(operation_id)
        if results:  # the Location protocol: 202 while running, then 204 (delete) or 200
            if not operation.finished:
                return web.Response(status=202, headers=self._lro_headers(operation, origin, api_version))
            if operation.status != "Succeeded":
                return _json(200, self.cluster.operation_wire(operation))
            return web.Response(status=204)
        headers = {} if operation.finished else {"Retry-After": str(self.config.retry_after_s)}
        return _json(200, self.cluster.operation_wire(operation), headers)

    def _list(self, request: web.Request) -> web.Response:
        pools = self.cluster.list()
        size = self.config.list_page_size
        start = int(request.query.get("$skipToken", "0") or 0)
        page: dict[str, Any] = {"value": pools[start : start + size]}
        if start + size < len(pools):
            query = {**request.query, "$skipToken": str(start + size)}
            page["nextLink"] = str(request.url.with_query(query))
        return _json(200, page)

    async def _token(self, request: web.Request, route: _Route) -> web.Response:
        if route.tenant is None:  # _route gives every TOKEN route its tenant
            raise RuntimeError(f"simulator token route without a tenant: {route}")
        if request.method != "POST":
            return _json(405, {"error": "invalid_request", "error_description": "Use POST."})
        fault = self.cluster.take_fault("TOKEN", None)
        if fault is not None:
            return _json(fault.status, {"error": fault.code, "error_description": fault.message})
        form = {k: str(v) for k, v in (await request.post()).items()}
        try:
            return _json(200, self.tokens.issue(route.tenant, form))
        except TokenRefused as refused:
            return _json(refused.status, refused.body())

    async def _admin(self, request: web.Request, route: _Route) -> web.Response:
        what, method = route.pool or "", request.method
        if what == "requests":
            if method == "DELETE":
                self.requests.clear()
                return web.Response(status=204)
            return _json(200, [r.to_json() for r in self.requests])
        if what == "faults":
            if method == "DELETE":
                self.clear_faults()
                return web.Response(status=204)
            if method == "POST":
                try:
                    payload = await request.json()
                    faults = [Fault.model_validate(f) for f in (payload if isinstance(payload, list) else [payload])]
                except (ValidationError, json.JSONDecodeError) as error:
                    return _json(400, {"error": str(error)})
                self.cluster.faults.extend(faults)
            return _json(200, [f.model_dump() for f in self.cluster.faults])
        if what == "pools":
            return _json(200, self.cluster.list())
        if what == "config":
            if method in ("PATCH", "POST"):
                changes = await request.json()
                unknown = set(changes) - _CONFIG_FIELDS_ADMIN_MAY_SET
                if unknown:
                    return _json(400, {"error": f"not settable: {sorted(unknown)}"})
                for key, value in changes.items():
                    setattr(self.config, key, value)
            return _json(200, self.config.model_dump(mode="json", exclude={"faults"}))
        return _json(404, {"error": f"unknown admin route {request.path}"})


def _decode_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if content_type == "application/x-www-form-urlencoded":
        # Kept whole, client assertion included: tests check the operator sent the federated token.
        return {k: v[0] for k, v in parse_qs(text).items()}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
