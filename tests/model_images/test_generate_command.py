"""``kaito generate``: against the runtime directly (--url), through the kubeconfig relay, and
through a real kube-apiserver's service proxy, with its errors for each missing piece."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException
from text_generation import AsyncClient

from kaito_operator.api import constants as c
from model_images.cli import register
from model_images.generate import (
    ApiServerRelay,
    EndpointNotReady,
    ServiceNotFound,
    WorkspaceNotFound,
    main,
    run,
    service_proxy_path,
)
from model_images.runtime.launcher import RuntimeProcess

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
def host_address() -> str:
    """An address of this machine other than loopback, which the API server may proxy to."""
    ip = shutil.which("ip")
    if ip is not None:
        shown = subprocess.run(
            [ip, "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.split()
        addresses = [shown[i + 1].split("/")[0] for i, word in enumerate(shown[:-1]) if word == "inet"]
        if addresses:
            return addresses[0]
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no non-loopback address for the API server to proxy to")
    return address


def workspace_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": name}}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }


def log_tail(directory: Path, pattern: str, chars: int = 3000) -> str:
    logs = sorted(directory.glob(pattern))
    return logs[0].read_text(errors="replace")[-chars:] if logs else ""


@pytest.mark.controlplane
async def test_generate_through_the_api_server_service_proxy(
    control_plane: Any, kube_api: client.ApiClient, namespace: str, runtime_process: RuntimeProcess
) -> None:
    try:
        await generate_through_the_service_proxy(control_plane, kube_api, namespace, runtime_process.url)
    except Exception as exc:
        # Both ends' logs: the proxy path crosses two servers this test does not own.
        apiserver_tail = await asyncio.to_thread(log_tail, Path(control_plane.log_dir), "*apiserver*")
        raise AssertionError(
            f"{exc!r}\n--- runtime log ---\n{runtime_process.log_tail()}\n--- kube-apiserver log ---\n{apiserver_tail}"
        ) from exc


async def generate_through_the_service_proxy(
    control_plane: Any, kube_api: client.ApiClient, namespace: str, runtime_url: str
) -> None:
    address = host_address()
    port = int(runtime_url.rsplit(":", 1)[1])
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
    service = {"metadata": {"name": name}, "spec": {"ports": [{"port": 80, "targetPort": port}]}}
    await core.create_namespaced_service(namespace, service, _request_timeout=timeout)
    with pytest.raises(EndpointNotReady, match=f"endpoint not ready: service {namespace}/tiny has no ready pods"):
        await run(args, printed.append)

    # A selector-less Service whose endpoint is the runtime on this machine. The API server proxies
    # only to pod addresses, so a pod (on no real node, never started) carries this machine's IP.
    pod = {
        "metadata": {"name": f"{name}-0"},
        "spec": {"nodeName": "no-node", "containers": [{"name": "tgi", "image": "tgi"}]},
    }
    await core.create_namespaced_pod(namespace, pod, _request_timeout=timeout)
    await core.patch_namespaced_pod_status(
        f"{name}-0",
        namespace,
        {"status": {"podIP": address, "podIPs": [{"ip": address}]}},
        _content_type="application/merge-patch+json",
        _request_timeout=timeout,
    )
    target = {"kind": "Pod", "name": f"{name}-0", "namespace": namespace}
    endpoints = {
        "metadata": {"name": name},
        "subsets": [{"addresses": [{"ip": address, "targetRef": target}], "ports": [{"port": port}]}],
    }
    await core.create_namespaced_endpoints(namespace, endpoints, _request_timeout=timeout)
    endpoint_slice = {
        "metadata": {"name": f"{name}-manual", "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"port": port, "protocol": "TCP"}],
    }
    await client.DiscoveryV1Api(kube_api).create_namespaced_endpoint_slice(
        namespace, endpoint_slice, _request_timeout=timeout
    )

    # The API server picks endpoints from its watch cache: wait until its proxy reaches the runtime.
    deadline = time.monotonic() + 30
    while True:
        try:
            await core.connect_get_namespaced_service_proxy_with_path(
                f"{name}:80", namespace, "health", _request_timeout=timeout
            )
            break
        except ApiException as exc:
            assert time.monotonic() < deadline, f"the service proxy never reached the runtime: {exc.body!r}"
            await asyncio.sleep(0.2)

    expected = await asyncio.to_thread(direct_generate, runtime_url, PROMPT, 6)
    await run(args, printed.append)
    assert "".join(printed) == expected + "\n"

    printed.clear()
    args.stream = True
    await run(args, printed.append)
    assert "".join(printed) == expected + "\n"
