"""``kaito generate WORKSPACE PROMPT``: find a Workspace's inference endpoint and call it.

Resolution: the Workspace must exist, its Service (same name) must exist with port 80, and the
Service must have a ready endpoint; each failure is its own error with what to check. Inside the
cluster the Service is called by its DNS name. Outside, calls go through the API server's service
proxy (``/api/v1/namespaces/NS/services/NAME:80/proxy/``) with the kubeconfig's credentials: a
local relay (like ``kubectl proxy``) forwards to it with kubernetes-asyncio's TLS and auth, so
the ``text-generation`` client, which takes only a URL and headers, works with any kubeconfig
(client certificates, bearer or exec-plugin tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from aiohttp import web
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from kaito_operator.api import constants

SERVICE_PORT: Final = 80
API_TIMEOUT_SECONDS: Final = 30.0
_SERVICE_ACCOUNT_TOKEN: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class EndpointError(Exception):
    """The Workspace's endpoint cannot be used; the message says why and what to check."""


class WorkspaceNotFound(EndpointError):
    pass


class ServiceNotFound(EndpointError):
    pass


class EndpointNotReady(EndpointError):
    pass


class EndpointNotServed(EndpointError):
    """The ready pods run on kwok's simulated nodes and nothing serves them (a sandbox's pretend pods)."""


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    """Where TGI's API is: the Service's DNS name in the cluster, or the API server's proxy path."""
    via_api_server: bool


def service_proxy_path(namespace: str, service: str, port: int = SERVICE_PORT) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


def _inference_condition(workspace: dict[str, Any]) -> str:
    for condition in (workspace.get("status") or {}).get("conditions") or []:
        if condition.get("type") == constants.COND_INFERENCE_READY:
            return (
                f" (InferenceReady={condition.get('status')}, {condition.get('reason') or 'no reason'}: "
                f"{condition.get('message') or 'no message'})"
            )
    return " (the Workspace reports no InferenceReady condition yet)"


async def resolve_endpoint(api: client.ApiClient, namespace: str, name: str, *, in_cluster: bool) -> Endpoint:
    """Check the Workspace, its Service and its readiness; return where to send requests."""
    try:
        workspace: dict[str, Any] = await client.CustomObjectsApi(api).get_namespaced_custom_object(
            constants.KAITO_GROUP,
            constants.KAITO_VERSION,
            namespace,
            constants.WORKSPACE_PLURAL,
            name,
            _request_timeout=API_TIMEOUT_SECONDS,
        )
    except ApiException as exc:
        if exc.status == 404:
            raise WorkspaceNotFound(
                f"workspace {name} not found in namespace {namespace} (kubectl get workspaces -n {namespace})"
            ) from None
        raise
    condition = _inference_condition(workspace)
    core = client.CoreV1Api(api)
    try:
        service = await core.read_namespaced_service(name, namespace, _request_timeout=API_TIMEOUT_SECONDS)
    except ApiException as exc:
        if exc.status == 404:
            raise ServiceNotFound(
                f"service {namespace}/{name} not found: the operator creates it with the inference workload{condition}"
            ) from None
        raise
    ports = [port.port for port in service.spec.ports or []]
    if SERVICE_PORT not in ports:
        raise ServiceNotFound(f"service {namespace}/{name} has no port {SERVICE_PORT} (ports: {ports})")
    slices = await client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={name}", _request_timeout=API_TIMEOUT_SECONDS
    )
    ready = [
        endpoint
        for endpoint_slice in slices.items
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.conditions is None or endpoint.conditions.ready is not False
    ]
    if not ready:
        raise EndpointNotReady(f"endpoint not ready: service {namespace}/{name} has no ready pods yet{condition}")
    await _refuse_pretend_pods(api, namespace, name, [e.target_ref.name for e in ready if e.target_ref is not None])
    if in_cluster:
        return Endpoint(base_url=f"http://{name}.{namespace}.svc:{SERVICE_PORT}", via_api_server=False)
    host = (api.configuration.host or "").rstrip("/")
    return Endpoint(base_url=f"{host}{service_proxy_path(namespace, name)}", via_api_server=True)


async def _refuse_pretend_pods(api: client.ApiClient, namespace: str, workspace: str, pods: list[str]) -> None:
    """Refuse pods on kwok's nodes that the sandbox's pod runner does not serve: kwok only pretends
    they run, so their addresses lead nowhere and must not be dialled. Skipped when the kubeconfig's
    user may not read nodes (a real cluster's users often may not; kwok nodes are a sandbox's)."""
    core = client.CoreV1Api(api)
    for pod_name in pods:
        try:
            pod = await core.read_namespaced_pod(pod_name, namespace, _request_timeout=API_TIMEOUT_SECONDS)
            if not pod.spec.node_name:
                continue
            node = await core.read_node(pod.spec.node_name, _request_timeout=API_TIMEOUT_SECONDS)
        except ApiException as exc:
            if exc.status in (403, 404):
                continue
            raise
        on_kwok = constants.ANNOTATION_KWOK_NODE in (node.metadata.annotations or {})
        served = (pod.metadata.annotations or {}).get(constants.ANNOTATION_SANDBOX_SERVED) == "true"
        if on_kwok and not served:
            raise EndpointNotServed(
                f"workspace {namespace}/{workspace} is not served: its pod {pod_name} runs on kwok's simulated node "
                f"{pod.spec.node_name}, where nothing runs (the sandbox serves only preset Workspaces' pods, "
                "not custom templates)"
            )


class ApiServerRelay:
    """A local HTTP endpoint that forwards every request to ``upstream`` through a
    kubernetes-asyncio ApiClient (its TLS settings, client certificate and refreshed bearer
    token), streaming responses back as they arrive."""

    def __init__(self, api: client.ApiClient, upstream: str, timeout: float) -> None:
        self._api = api
        self._upstream = upstream.rstrip("/")
        self._timeout = timeout
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        headers = {"Content-Type": "application/json", "Accept": request.headers.get("Accept", "*/*")}
        auth = await self._api.configuration.auth_settings()
        for setting in auth.values():
            headers[setting["key"]] = setting["value"]
        upstream = await self._api.rest_client.request(
            request.method,
            f"{self._upstream}{request.rel_url}",
            headers=headers,
            body=body,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            if upstream.status >= 400:
                return web.json_response(await _upstream_error(upstream), status=upstream.status)
            response = web.StreamResponse(
                status=upstream.status,
                headers={"Content-Type": upstream.headers.get("Content-Type", "application/octet-stream")},
            )
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientPayloadError as exc:
                if "event-stream" not in response.content_type:
                    raise
                # The API server cut a stream; end ours cleanly with a TGI error event so the
                # client reports why instead of a transport error.
                error = {"error": f"the API server's service proxy cut the response: {exc}", "error_type": "proxy"}
                await response.write(b"\n\ndata:" + json.dumps(error).encode() + b"\n\n")
            await response.write_eof()
            return response
        finally:
            upstream.release()


def running_in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(_SERVICE_ACCOUNT_TOKEN)


async def _upstream_error(upstream: Any) -> Any:
    """An error answer in TGI's shape, whatever the API server or the endpoint sent (JSON or text),
    so the client reports the status and the server's own message."""
    if "json" in upstream.headers.get("Content-Type", ""):
        with contextlib.suppress(ValueError, aiohttp.ContentTypeError):
            return _tgi_error(await upstream.json(), upstream.status)
    text = (await upstream.text()).strip() or upstream.reason or "no message"
    return {"error": f"the API server's service proxy answered {upstream.status}: {text}", "error_type": "proxy"}


def _tgi_error(payload: Any, status: int) -> Any:
    """A Kubernetes ``Status`` (the API server's own refusal, e.g. no endpoint to proxy to) in
    TGI's error shape, so the ``text-generation`` client reports its message; TGI errors pass."""
    if isinstance(payload, dict) and payload.get("kind") == "Status":
        message = payload.get("message") or payload.get("reason") or "no message"
        return {"error": f"the API server's service proxy answered {status}: {message}", "error_type": "proxy"}
    return payload


async def _load_config(kubeconfig: str | None, context: str | None) -> tuple[client.Configuration, bool]:
    configuration = client.Configuration()
    if kubeconfig is None and running_in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return configuration, True
    await config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
    return configuration, False


@contextlib.asynccontextmanager
async def workspace_url(
    name: str,
    namespace: str,
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    timeout: float = 120.0,
) -> AsyncIterator[str]:
    """Yield a URL where the Workspace's TGI API answers (a local relay when outside the cluster)."""
    configuration, in_cluster = await _load_config(kubeconfig, context)
    async with client.ApiClient(configuration) as api:
        endpoint = await resolve_endpoint(api, namespace, name, in_cluster=in_cluster)
        if not endpoint.via_api_server:
            yield endpoint.base_url
            return
        relay = ApiServerRelay(api, endpoint.base_url, timeout)
        url = await relay.start()
        try:
            yield url
        finally:
            await relay.stop()


# --- calling the endpoint ---------------------------------------------------------------------------
Printer = Callable[[str], None]


def auth_headers(api_key: str | None) -> dict[str, str]:
    """``Authorization: Bearer`` for an endpoint protected by ``kaito.sh/api-key-secret``."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


async def generate_text(
    url: str,
    prompt: str,
    *,
    max_new_tokens: int,
    stream: bool,
    timeout: float,
    out: Printer,
    api_key: str | None = None,
) -> None:
    from text_generation import AsyncClient

    tgi = AsyncClient(url, headers=auth_headers(api_key), timeout=int(timeout))
    if stream:
        async for event in tgi.generate_stream(prompt, max_new_tokens=max_new_tokens):
            if not event.token.special:
                out(event.token.text)
        out("\n")
    else:
        response = await tgi.generate(prompt, max_new_tokens=max_new_tokens)
        out(response.generated_text + "\n")


async def chat(
    url: str,
    prompt: str,
    *,
    max_new_tokens: int,
    stream: bool,
    timeout: float,
    out: Printer,
    temperature: float | None = None,
    seed: int | None = None,
    api_key: str | None = None,
) -> None:
    body: dict[str, Any] = {
        "model": "tgi",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_new_tokens,
        "stream": stream,
    }
    if temperature is not None:
        body["temperature"] = temperature
    if seed is not None:
        body["seed"] = seed
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(f"{url.rstrip('/')}/v1/chat/completions", json=body, headers=auth_headers(api_key)) as response,
    ):
        if response.status != 200:
            raise EndpointError(f"the endpoint answered {response.status}: {await response.text()}")
        if not stream:
            out((await response.json())["choices"][0]["message"]["content"] + "\n")
            return
        async for line in response.content:
            text = line.decode().strip()
            if not text.startswith("data:") or text == "data: [DONE]":
                continue
            chunk = json.loads(text.removeprefix("data:"))
            if "error" in chunk:
                raise EndpointError(f"the endpoint failed mid-stream: {chunk['error']}")
            for choice in chunk.get("choices", []):
                out(choice["delta"].get("content") or "")
        out("\n")


async def run(args: argparse.Namespace, out: Printer) -> None:
    async def call(url: str) -> None:
        if args.chat:
            await chat(
                url,
                args.prompt,
                max_new_tokens=args.max_new_tokens,
                stream=args.stream,
                timeout=args.timeout,
                out=out,
                temperature=args.temperature,
                seed=args.seed,
                api_key=args.api_key,
            )
        else:
            await generate_text(
                url,
                args.prompt,
                max_new_tokens=args.max_new_tokens,
                stream=args.stream,
                timeout=args.timeout,
                out=out,
                api_key=args.api_key,
            )

    if args.url:
        await _within(call(args.url), args.timeout)
        return
    if not args.workspace:
        raise EndpointError("name a Workspace, or pass --url")
    if args.api_key and not running_in_cluster():
        # The API server authenticates the caller with the Authorization header and removes it
        # before proxying, so a key cannot reach the endpoint through its service proxy.
        raise EndpointError(
            "an API key cannot pass through the API server's service proxy (it consumes the Authorization "
            f"header): run `kubectl port-forward -n {args.namespace} service/{args.workspace} 8080:80` and call "
            "again with --url http://localhost:8080"
        )
    async with workspace_url(
        args.workspace, args.namespace, kubeconfig=args.kubeconfig, context=args.context, timeout=args.timeout
    ) as url:
        await _within(call(url), args.timeout)


async def _within(call: Awaitable[None], timeout: float) -> None:
    try:
        await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise EndpointError(f"no answer within {timeout} s (--timeout)") from None


def main(args: argparse.Namespace) -> int:
    from text_generation import errors as tgi

    client_errors = (
        tgi.BadRequestError,
        tgi.GenerationError,
        tgi.IncompleteGenerationError,
        tgi.NotFoundError,
        tgi.OverloadedError,
        tgi.RateLimitExceededError,
        tgi.ShardNotReadyError,
        tgi.ShardTimeoutError,
        tgi.UnknownError,
        tgi.ValidationError,
    )

    def out(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        asyncio.run(run(args, out))
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except client_errors as exc:
        print(f"error: the endpoint refused the request: {exc}", file=sys.stderr)
        return 1
    except aiohttp.ContentTypeError as exc:
        print(f"error: the endpoint answered {exc.status} without a JSON body: {exc.message}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"error: cannot reach the endpoint: {exc}", file=sys.stderr)
        return 1
    except ConfigException as exc:
        print(f"error: no usable kubeconfig: {exc}", file=sys.stderr)
        return 1
    except ApiException as exc:
        print(f"error: the API server answered {exc.status} {exc.reason}", file=sys.stderr)
        return 1
    return 0
