"""`kaito sandbox up --aks --operator --apply <falcon-7b example>` as a user runs it, until tokens come
back through the cluster's own paths: the kube-apiserver's service proxy (Service → endpoint → the
pod's network namespace → the runtime), `kaito generate`, pods/portforward and pods/log. Then the
Workspace is deleted (its runtime goes) and `kaito sandbox down` leaves no process, network
namespace, link or route behind.

Needs root (network namespaces): without it the sandbox falls back to loopback addresses, which the
API server's service proxy refuses, so the test is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from kaito_operator.api import constants as c
from kaito_operator.testing import eventually
from sandbox import pod_network
from sandbox.controlplane import read_state
from sandbox.kube import api_client_from_kubeconfig
from tests.e2e.e2e_kit import EXAMPLES

pytestmark = [pytest.mark.full, pytest.mark.runtime]

KAITO = [sys.executable, "-m", "kaito.cli"]
WORKSPACE_NAME = "workspace-falcon-7b"  # the example's name
SERVICE_PORT = 80
TGI_PORT = 5000  # the port TGI's launcher is given in a preset pod (and the runtime serves in the sandbox)
RUNTIME_READY_LINE = "kaito runtime serving"  # what the runtime prints once it serves (docs/inference.md)
NEW_TOKENS = 8


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _runtime_pids(model_dir: Path) -> list[int]:
    """Processes running the runtime on this sandbox's model, from the OS's process table."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"model_images.runtime" in argv and str(model_dir).encode() in argv and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def _routes_within(cidr: str) -> str:
    result = subprocess.run(["ip", "route", "show", "root", cidr], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _kaito(*argv: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KAITO, *argv], capture_output=True, text=True, timeout=timeout, check=False, env=env)


async def _generate_via_proxy(api: client.ApiClient) -> dict[str, Any]:
    """POST /generate to the API server's service proxy with the kubeconfig's client certificate."""
    url = f"{api.configuration.host}/api/v1/namespaces/default/services/{WORKSPACE_NAME}:{SERVICE_PORT}/proxy/generate"
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": NEW_TOKENS, "details": True}}
    response = await api.rest_client.request(
        "POST", url, headers={"Content-Type": "application/json"}, body=body, _request_timeout=60
    )
    assert response.status == 200, response.data
    result: dict[str, Any] = json.loads(response.data)
    return result


async def _generate_via_port_forward(kubeconfig: Path, pod: str) -> dict[str, Any]:
    """POST /generate over pods/portforward (what `kubectl port-forward` uses), websocket channels:
    each port has a data and an error channel, and each first sends the port number."""
    api = await api_client_from_kubeconfig(kubeconfig)
    body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": NEW_TOKENS, "details": True}})
    request = (
        f"POST /generate HTTP/1.1\r\nHost: pod\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()
    async with WsApiClient(api.configuration) as ws:
        await api.close()
        core = client.CoreV1Api(ws)
        connect: Any = await core.connect_get_namespaced_pod_portforward(
            pod, "default", ports=TGI_PORT, _preload_content=False
        )
        received = b""
        async with connect as socket:
            port_frames = 0
            async for message in socket:
                channel, payload = message.data[0], message.data[1:]
                if channel in (0, 1) and len(payload) == 2 and port_frames < 2:
                    port_frames += 1
                    if port_frames == 2:
                        await socket.send_bytes(bytes([0]) + request)
                    continue
                assert channel == 0, f"port-forward error: {payload!r}"
                received += payload
                head, _, rest = received.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    None,
                )
                if length is not None and len(rest) >= length:
                    break
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    result: dict[str, Any] = json.loads(rest)
    return result


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root; without them the proxy is refused")
async def test_sandbox_serves_tokens_through_the_cluster_and_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "sandbox"
    kubeconfig = state / "kubeconfig"
    up_argv = ["sandbox", "up", "--aks", "--operator", "--exit-when-ready", "--state-dir", str(state)]
    up_argv += ["--apply", str(EXAMPLES / "kaito_workspace_falcon_7b.yaml"), "--wait-ready", "300"]
    record: pod_network.NetworkRecord | None = None
    recorded: dict[str, Any] | None = None
    try:
        try:
            up = _kaito(*up_argv, timeout=600)
        finally:
            # Read even when `up` failed or timed out: the checks after `down` need what it made.
            record = pod_network.NetworkRecord.load(state)
            recorded = read_state(state)
        assert up.returncode == 0, up.stderr
        assert record is not None and record.mode == "namespaces"
        model_dir = state / "model"
        async with await api_client_from_kubeconfig(kubeconfig) as api:
            core = client.CoreV1Api(api)
            pods = (
                await core.list_namespaced_pod("default", label_selector=f"{c.LABEL_WORKSPACE}={WORKSPACE_NAME}")
            ).items
            assert len(pods) == 1
            pod = pods[0]
            # The pod's IP lies in the sandbox's own range and only there is it routed.
            assert pod_network.in_range(record, pod.status.pod_ip)

            proxied = await _generate_via_proxy(api)
            assert proxied["details"]["generated_tokens"] >= 1
            assert proxied["generated_text"]

            env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
            generated = _kaito(
                "generate", WORKSPACE_NAME, "Hello", "--max-new-tokens", str(NEW_TOKENS), timeout=120, env=env
            )
            assert generated.returncode == 0, generated.stderr
            # Greedy decoding of the same prompt by the same server: the same text by either path.
            assert generated.stdout.rstrip("\n") == proxied["generated_text"]

            forwarded = await _generate_via_port_forward(kubeconfig, pod.metadata.name)
            assert forwarded["generated_text"] == proxied["generated_text"]

            pod_log = await core.read_namespaced_pod_log(pod.metadata.name, "default")
            assert RUNTIME_READY_LINE in pod_log

            assert _runtime_pids(model_dir)
            await client.CustomObjectsApi(api).delete_namespaced_custom_object(
                c.KAITO_GROUP, c.KAITO_VERSION, "default", c.WORKSPACE_PLURAL, WORKSPACE_NAME
            )

            async def runtime_gone() -> bool | None:
                return True if not _runtime_pids(model_dir) else None

            await eventually(runtime_gone, timeout=120, what="the runtime of the deleted Workspace's pod to exit")
    finally:
        down = _kaito("sandbox", "down", "--state-dir", str(state), timeout=120)
    assert down.returncode == 0, down.stderr
    assert recorded is not None and not any(_alive(p["pid"]) for p in recorded["processes"])
    assert record is not None
    assert not pod_network.leftovers(record)
    assert _routes_within(record.pod_range) == ""
