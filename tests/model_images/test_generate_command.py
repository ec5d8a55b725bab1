"""``kaito generate``: against the runtime directly (--url), through the kubeconfig relay, and
through a real kube-apiserver's service proxy, with its errors for each missing piece."""

from __future__ import annotations

import argparse
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes_asyncio import client
from text_generation import AsyncClient
from text_generation import errors as tgi_errors

from kaito_operator.api import constants as c
from kaito_operator.testing import eventually, gpu_node
from model_images.cli import register
from model_images.generate import (
    ApiServerRelay,
    EndpointNotReady,
    EndpointNotServed,
    ServiceNotFound,
    WorkspaceNotFound,
    main,
    run,
    service_proxy_path,
)

pytestmark = pytest.mark.runtime

PROMPT = "What is batching?"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kaito")
    register(parser.add_subparsers(dest="command", required=True), lambda module, function: lambda args: 0)
    return parser.parse_args(["generate", *argv])


def direct_generate(url: str, prompt: str, max_new_tokens: int) -> str:
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens}}).encode()
    request = urllib.request.Request(f"{url}/generate", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        text: str = json.load(response)["generated_text"]
        return text


# --- --url -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_generate_with_url_prints_the_generated_text(
    runtime_url: str, stream: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = direct_generate(runtime_url, PROMPT, 7)
    argv = ["--url", runtime_url, PROMPT, "--max-new-tokens", "7", *(["--stream"] if stream else [])]
    assert main(parse(*argv)) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_chat_plain_and_streamed_print_the_same(runtime_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", runtime_url, PROMPT, "--chat", "--temperature", "0", "--max-new-tokens", "6"]
    assert main(parse(*argv)) == 0
    plain = capsys.readouterr().out
    assert main(parse(*argv, "--stream")) == 0
    assert capsys.readouterr().out == plain
    assert plain.strip()


def test_refused_request_is_reported(runtime_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(parse("--url", runtime_url, PROMPT, "--max-new-tokens", "5000")) == 1
    assert "error: the endpoint refused the request: Input validation error: `inputs` tokens" in capsys.readouterr().err


def test_unreachable_url_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    assert main(parse("--url", closed, PROMPT, "--timeout", "10")) == 1
    assert "error: cannot reach the endpoint" in capsys.readouterr().err


def test_a_workspace_or_url_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(parse(PROMPT)) == 1
    assert "name a Workspace, or pass --url" in capsys.readouterr().err


# --- the relay -------------------------------------------------------------------------------------
async def test_relay_forwards_generate_and_streams(runtime_url: str) -> None:
    configuration = client.Configuration(host=runtime_url)
    async with client.ApiClient(configuration) as api:
        relay = ApiServerRelay(api, runtime_url, timeout=60)
        relayed_url = await relay.start()
        try:
            direct = await AsyncClient(runtime_url, timeout=60).generate(PROMPT, max_new_tokens=6)
            relayed = await AsyncClient(relayed_url, timeout=60).generate(PROMPT, max_new_tokens=6)
            streamed = [e async for e in AsyncClient(relayed_url, timeout=60).generate_stream(PROMPT, max_new_tokens=6)]
        finally:
            await relay.stop()
    assert relayed.generated_text == direct.generated_text
    assert streamed[-1].generated_text == direct.generated_text
    assert len(streamed) == direct.details.generated_tokens


def test_service_proxy_path() -> None:
    assert service_proxy_path("team-a", "falcon") == "/api/v1/namespaces/team-a/services/falcon:80/proxy"


# --- through a real API server ---------------------------------------------------------------------
def workspace_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }


@pytest.mark.controlplane
async def test_generate_resolves_the_workspace_its_service_and_ready_endpoints(
    control_plane: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    # The last hop (the API server's service proxy to a ready pod) is not exercised: the API server
    # refuses to proxy to loopback addresses, and tests send traffic to loopback only. The relay that
    # carries that hop is tested against the runtime directly (test_relay_forwards_generate_and_streams).
    name = "tiny"
    args = parse(name, PROMPT, "--namespace", namespace, "--kubeconfig", str(Path(control_plane.kubeconfig)))
    args.max_new_tokens = 6
    printed: list[str] = []
    timeout = 30

    with pytest.raises(WorkspaceNotFound, match=f"workspace tiny not found in namespace {namespace}"):
        await run(args, printed.append)

    await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        c.KAITO_GROUP, c.KAITO_VERSION, namespace, c.WORKSPACE_PLURAL, workspace_body(name), _request_timeout=timeout
    )
    with pytest.raises(ServiceNotFound, match=f"service {namespace}/tiny not found"):
        await run(args, printed.append)

    core = client.CoreV1Api(kube_api)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1ServiceSpec(ports=[client.V1ServicePort(port=80, target_port=5000)]),
    )
    await core.create_namespaced_service(namespace, service, _request_timeout=timeout)
    with pytest.raises(EndpointNotReady, match=f"endpoint not ready: service {namespace}/tiny has no ready pods"):
        await run(args, printed.append)


async def test_relay_reports_a_plain_text_refusal_with_its_status_and_message() -> None:
    # What a proxy that refuses a destination answers: a status and a text/plain body.
    refusal = "resolve_deny: denied destination"

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text=refusal)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with client.ApiClient(client.Configuration(host=upstream)) as api:
            relay = ApiServerRelay(api, upstream, timeout=30)
            relayed_url = await relay.start()
            try:
                with pytest.raises(tgi_errors.ShardNotReadyError) as refused:  # the client's class for 403
                    await AsyncClient(relayed_url, timeout=30).generate(PROMPT, max_new_tokens=2)
            finally:
                await relay.stop()
    finally:
        await runner.cleanup()
    assert "403" in str(refused.value) and refusal in str(refused.value)


@pytest.mark.controlplane
@pytest.mark.full
async def test_generate_refuses_a_workspace_whose_pods_kwok_only_pretends_to_run(
    control_plane: Any, kube_api: client.ApiClient, namespace: str
) -> None:
    # A custom-template Workspace in the sandbox: its pod is on a kwok node, Ready, with an address
    # that exists nowhere. generate must refuse it without sending anything to that address.
    name = "pretend"
    node_name = f"kwok-{namespace}"
    core = client.CoreV1Api(kube_api)
    timeout = 30
    node: Any = gpu_node(node_name, labels={})  # the client sends plain dicts as they are
    await core.create_node(node, _request_timeout=timeout)
    try:
        await client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            c.KAITO_GROUP,
            c.KAITO_VERSION,
            namespace,
            c.WORKSPACE_PLURAL,
            workspace_body(name),
            _request_timeout=timeout,
        )
        service = client.V1Service(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1ServiceSpec(selector={"app": name}, ports=[client.V1ServicePort(port=80, target_port=5000)]),
        )
        await core.create_namespaced_service(namespace, service, _request_timeout=timeout)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"{name}-0", labels={"app": name}),
            spec=client.V1PodSpec(
                node_name=node_name,
                containers=[client.V1Container(name="app", image="nginx", command=["nginx"])],
                tolerations=[client.V1Toleration(operator="Exists")],
            ),
        )
        await core.create_namespaced_pod(namespace, pod, _request_timeout=timeout)
        args = parse(name, PROMPT, "--namespace", namespace, "--kubeconfig", str(Path(control_plane.kubeconfig)))
        printed: list[str] = []

        async def refusal() -> EndpointNotServed | None:
            try:
                await run(args, printed.append)
            except EndpointNotReady:
                return None  # kwok and the endpoint controller have not made the pod a ready endpoint yet
            except EndpointNotServed as refused:
                return refused
            raise AssertionError("generate called a pod that nothing serves")

        refused = await eventually(refusal, timeout=60, what="the pretend pod as a ready endpoint")
        assert f"workspace {namespace}/{name} is not served" in str(refused)
        assert node_name in str(refused)
    finally:
        await core.delete_node(node_name, _request_timeout=timeout)
