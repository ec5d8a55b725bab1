"""What ``kaito sandbox up|down|build`` do."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import FrameType
from typing import Any, cast

from kubernetes_asyncio import client

from kaito_operator.api import constants as c
from kaito_operator.api.crds import all_crds
from sandbox import pod_network
from sandbox.binaries import BinaryError, ensure_binaries
from sandbox.controlplane import (
    DEFAULT_POD_CIDR,
    ControlPlane,
    ControlPlaneError,
    Profile,
    default_state_dir,
    free_port,
    http_probe,
    is_running,
    stop_from_state,
)
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig, apply_objects, install_crds, load_manifests


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).resolve() if args.state_dir else default_state_dir()


async def _install_crds(plane: ControlPlane) -> None:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())


async def _apply(plane: ControlPlane, manifests: list[Path], wait_ready: float) -> None:
    """Apply the manifests; with ``wait_ready`` > 0, wait until every applied Workspace is ready."""
    workspaces = []
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        for manifest in manifests:
            for obj in await apply_objects(api, load_manifests(manifest)):
                meta = obj["metadata"]
                where = f" in {meta['namespace']}" if meta.get("namespace") else ""
                print(f"applied {obj['kind']} {meta['name']}{where}", file=sys.stderr)
                if obj["kind"] == c.WORKSPACE_KIND:
                    workspaces.append((meta["namespace"], meta["name"]))
        if wait_ready > 0 and workspaces:
            await _wait_workspaces_ready(api, workspaces, wait_ready)


async def _wait_workspaces_ready(api: Any, workspaces: list[tuple[str, str]], timeout: float) -> None:
    objects = client.CustomObjectsApi(api)
    deadline = time.monotonic() + timeout
    pending = set(workspaces)
    shown: dict[tuple[str, str], str] = {}
    print(f"waiting up to {timeout:.0f}s for {len(pending)} Workspace(s) to be ready", file=sys.stderr)
    while pending:
        for namespace, name in sorted(pending):
            obj = await objects.get_namespaced_custom_object(
                c.KAITO_GROUP, c.KAITO_VERSION, namespace, c.WORKSPACE_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            )
            conditions = {cond["type"]: cond for cond in obj.get("status", {}).get("conditions", []) or []}
            ready = conditions.get(c.COND_WORKSPACE_READY, {})
            message = str(ready.get("message") or "waiting for the operator")
            if ready.get("status") != "True" and shown.get((namespace, name)) != message:
                shown[(namespace, name)] = message  # progress: each new step the Workspace reports
                print(f"Workspace {name}: {message}", file=sys.stderr)
            if ready.get("status") == "True":
                pending.discard((namespace, name))
                print(f"Workspace {name} is ready", file=sys.stderr)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"Workspaces not ready after {timeout:.0f}s: {', '.join(n for _, n in sorted(pending))}")
        if pending:
            await asyncio.sleep(1.0)  # poll interval while waiting on a condition with a deadline


def _start_operator(plane: ControlPlane, env_file: Path) -> None:
    """Run `kaito run` beside the control plane with the simulator's settings from operator.env. Its
    admission webhook registers itself by URL on 127.0.0.1 (allowed for admission webhooks), so the
    sandbox refuses bad Workspaces at `kubectl apply` as a cluster with the chart does."""

    health_port, webhook_port = free_port(), free_port()
    environment = {**os.environ, **_read_env_file(env_file)}
    environment |= {
        "KAITO_HEALTH_PORT": str(health_port),
        "KAITO_METRICS_PORT": str(free_port()),
        "KAITO_BIND_ADDRESS": "127.0.0.1",
        "KAITO_WEBHOOK_PORT": str(webhook_port),
        # The path is the webhook's (kaito_operator.webhook.server.WEBHOOK_PATH, Kaito v0.1's).
        "KAITO_WEBHOOK_URL": f"https://127.0.0.1:{webhook_port}/validate/workspace.kaito.sh",
    }
    probe = http_probe(f"http://127.0.0.1:{health_port}/readyz")
    plane.add_process("operator", [sys.executable, "-m", "kaito.cli", "run"], probe, env=environment)


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, raw = line.partition("=")
        if key:
            values[key] = shlex.split(raw)[0] if raw else ""
    return values


OPERATOR_ENV = "operator.env"


def _simulator_info(plane: ControlPlane) -> dict[str, Any] | None:
    """The JSON line the simulator prints once it serves (None until then)."""
    log = plane.log_dir / "aks-simulator.log"
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        if line.startswith("{"):
            try:
                info: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            return info
    return None


def _start_simulator(plane: ControlPlane, delay: float, faults: list[dict[str, object]]) -> Path:
    """Run the AKS + Entra ID simulator beside the control plane; write operator.env; return its path."""

    aks_dir = plane.state_dir / "aks"
    aks_dir.mkdir(exist_ok=True)
    token_file = aks_dir / "federated-token"
    argv = [
        sys.executable,
        "-m",
        "sandbox.aks_simulator",
        f"--port={free_port()}",
        f"--kubeconfig={plane.kubeconfig}",
        f"--tls-dir={aks_dir}",
        f"--token-file={token_file}",
        f"--provisioning-delay={delay}",
    ]
    plane.add_process("aks-simulator", argv, lambda: _simulator_info(plane) is not None)
    info = _simulator_info(plane)
    if info is None:  # add_process waited for this line; it is gone only if someone truncated the log
        raise RuntimeError(f"the AKS simulator started but its ready line is gone from {plane.log_dir}")
    environment = {"KUBECONFIG": str(plane.kubeconfig), **info["environment"]}
    if faults:
        context = ssl.create_default_context(cafile=str(info["ca"]))
        request = urllib.request.Request(
            f"{info['endpoint']}/_admin/faults",
            data=json.dumps(faults).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            response.read()
    env_file = plane.state_dir / OPERATOR_ENV
    env_file.write_text("".join(f"{key}={shlex.quote(str(value))}\n" for key, value in environment.items()))
    return env_file


def _parse_faults(raw: list[str]) -> list[dict[str, object]]:
    from sandbox.aks_simulator.config import Fault

    faults = []
    for text in raw:
        try:
            faults.append(Fault.model_validate_json(text).model_dump())
        except ValueError as error:
            raise ValueError(f"--aks-fault {text}: {error}") from None
    return faults


SANDBOX_MODEL_CONTEXT = 4096
"""The sandbox model's max_position_embeddings: room for every preset's max total tokens."""


def _write_sandbox_model(plane: ControlPlane) -> Path:
    """The small model every served pod loads: the runtime's tiny Llama (random weights)."""
    model_dir = plane.state_dir / "model"
    argv = [sys.executable, "-m", "model_images.runtime", "tiny-model", str(model_dir)]
    argv += ["--max-position-embeddings", str(SANDBOX_MODEL_CONTEXT)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"could not write the sandbox model to {model_dir}: {result.stderr.strip()}")
    return model_dir


def _start_pod_runner(plane: ControlPlane, record: pod_network.NetworkRecord) -> None:
    """Run the pod runner (sandbox/pod_runner.py) beside the control plane."""
    print("writing the sandbox model (a tiny Llama with random weights: its answers are not text)", file=sys.stderr)
    model_dir = _write_sandbox_model(plane)
    argv = [sys.executable, "-m", "sandbox.pod_runner", f"--kubeconfig={plane.kubeconfig}"]
    argv += [f"--state-dir={plane.state_dir}", f"--model={model_dir}"]
    log = plane.log_dir / "pod-runner.log"
    plane.add_process("pod-runner", argv, lambda: log.exists() and "serving preset pods" in log.read_text())
    if record.mode == "namespaces":
        where = f"each in its own network namespace with an IP from {record.pod_range}"
    else:
        where = (
            f"not root, so without network namespaces: on loopback addresses from {record.pod_range}; the API "
            "server's service proxy refuses loopback addresses, so use `kubectl port-forward` to reach them"
        )
    print(f"pod runner is serving preset pods ({where}); its log is {log}", file=sys.stderr)


def up(args: argparse.Namespace) -> int:
    manifests = [Path(path) for path in args.apply]
    for manifest in manifests:
        if not manifest.is_file():
            print(f"error: --apply {manifest}: no such file", file=sys.stderr)
            return 2
    if args.operator and not args.aks:
        print("error: --operator needs --aks (the operator provisions nodes through the simulator)", file=sys.stderr)
        return 2
    if args.aks and args.profile != "full":
        print("error: --aks needs --profile full (nodes of new agent pools need kwok)", file=sys.stderr)
        return 2
    try:
        faults = _parse_faults(args.aks_fault)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    state_dir = _state_dir(args)
    serve = args.operator if args.serve is None else args.serve
    if serve and args.profile != "full":
        print("error: --serve needs --profile full (pods run on kwok's nodes)", file=sys.stderr)
        return 2
    if is_running(state_dir):
        # Before anything touches the folder: its network.json belongs to the running sandbox.
        print(
            f"error: a control plane is already running from {state_dir}; stop it with "
            f"`kaito sandbox down --state-dir {state_dir}` or pick another --state-dir",
            file=sys.stderr,
        )
        return 1
    record: pod_network.NetworkRecord | None = None
    left = pod_network.remove_all(state_dir)  # a crashed run's namespaces, links and route
    if left:
        print(f"removed what a previous run left: {', '.join(left)}", file=sys.stderr)
    # kwok's pod IPs come from a range of the sandbox's own, reserved by a guard route as root, whether
    # or not the pods are served: an unserved pod's address then fails here instead of going anywhere.
    reserve_range = args.profile == "full" and (serve or pod_network.network_mode() == "namespaces")
    try:
        record = pod_network.reserve() if reserve_range else None
    except pod_network.PodNetworkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    plane = ControlPlane(
        state_dir,
        profile=cast(Profile, args.profile),
        die_with_parent=not args.exit_when_ready,
        pod_cidr=record.kwok_cidr if record else DEFAULT_POD_CIDR,
        serve_pods=serve,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"starting the control plane ({args.profile}) in {state_dir}", file=sys.stderr)
        try:
            plane.start(timeout=args.timeout)
        finally:
            if record is not None:
                # start() made the folder afresh (or failed): record the range there either way, so
                # `down` releases it.
                state_dir.mkdir(parents=True, exist_ok=True)
                record.save(state_dir)
        print("control plane is up; installing the CRDs", file=sys.stderr)
        asyncio.run(_install_crds(plane))
        if args.aks:
            env_file = _start_simulator(plane, args.aks_provisioning_delay, faults)
            print(f"AKS simulator is ready; operator settings in {env_file}", file=sys.stderr)
            if args.operator:
                _start_operator(plane, env_file)
                print(f"operator is running; its log is {plane.log_dir / 'operator.log'}", file=sys.stderr)
            else:
                print(f"run the operator with: set -a; . {env_file}; set +a; kaito run", file=sys.stderr)
        if serve and record is not None:
            _start_pod_runner(plane, record)
        asyncio.run(_apply(plane, manifests, args.wait_ready))
    except Exception as error:  # whatever failed (API, HTTP, process), nothing half-made stays behind
        plane.stop()
        pod_network.remove_all(state_dir)
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"control plane ({args.profile}) is ready; logs in {plane.log_dir}", file=sys.stderr)
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
    if args.exit_when_ready:
        print(f"stop it with: kaito sandbox down --state-dir {plane.state_dir}", file=sys.stderr)
        return 0
    print("press Ctrl-C to stop", file=sys.stderr)
    try:
        while not stop.wait(1.0):
            dead = [p for p in plane.processes if p.process is not None and p.process.poll() is not None]
            if dead:
                proc = dead[0]
                print(f"error: {proc.name} exited; last lines of {proc.log}:\n{proc.tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        plane.stop()
        stop_from_state(plane.state_dir, remove=False)
        pod_network.remove_all(plane.state_dir)
        stop_from_state(plane.state_dir)
        print("control plane stopped", file=sys.stderr)


def down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    try:
        stopped = stop_from_state(state_dir, remove=False)
        network = pod_network.remove_all(state_dir)  # after the runner: it may still be making one
        stop_from_state(state_dir)
    except (ControlPlaneError, pod_network.PodNetworkError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if network:
        print(f"removed {', '.join(network)}", file=sys.stderr)
    if stopped:
        print(f"stopped {', '.join(stopped)}; removed {state_dir}", file=sys.stderr)
    else:
        print(f"nothing was running from {state_dir}; removed it", file=sys.stderr)
    return 0


def build(args: argparse.Namespace) -> int:
    del args
    try:
        binaries = ensure_binaries()
    except BinaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in vars(binaries).items():
        print(f"{name.replace('_', '-')}: {path}")
    return 0
