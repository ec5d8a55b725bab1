"""The sandbox's pod runner: serves the preset pods kwok only pretends to run.

kwok plays every node's kubelet but runs nothing. For each pod bound to a node whose first
container runs a preset's server (TGI's launcher or the transformers runtime: ``SERVED_COMMANDS``,
the same commands kwok's ``pods-served.yaml`` stage matches), this process

1. makes the pod's network namespace holding the pod's IP (``sandbox.pod_network``; loopback
   addresses without root),
2. starts the project's CPU runtime (``python -m model_images.runtime serve``) with the sandbox's
   small model, on the container's port and with the container's token limits, logging in the CRI
   format kubelets write (``<time> stdout F <line>``) under ``<state>/pods/``,
3. creates kwok's per-pod ``Logs`` and ``PortForward`` objects (owned by the pod, so they go with it)
   so ``kubectl logs`` and ``kubectl port-forward`` reach that log and that address,
4. polls the runtime's ``/health`` (with a deadline) and, once it answers, marks the pod Ready (kwok's
   stage left it Running but not Ready), so the Service's endpoint appears only when the model answers.

A container whose command carries ``--api-key $(VAR)`` (the ``kaito.sh/api-key-secret`` annotation)
is served with that key: the runner reads ``VAR``'s Secret through the API and hands the key to the
runtime in ``KAITO_API_KEY``; without the key the pod is not served. Whenever serving fails (no key,
a network error, a runtime that exits or never answers, before or after Ready) the pod's Ready
condition says False with the reason, and the runner tries again after a growing delay.

When a pod goes (deleted, or its IP changed) its runtime gets SIGTERM and its namespace is removed.
On SIGTERM the runner stops every runtime and removes every namespace it made.

``python -m sandbox.pod_runner --kubeconfig K --state-dir S --model DIR``; ``kaito sandbox up`` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.rest import ApiException

from kaito_operator.api import constants as c
from sandbox import pod_network
from sandbox.controlplane import die_with_parent
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig
from sandbox.pod_network import NetworkRecord

log = logging.getLogger("sandbox.pod_runner")
_T = TypeVar("_T")

SERVED_COMMANDS: Final = ("text-generation-launcher", "/opt/kaito-runtime/bin/python")
"""``command[0]`` of the containers served for real (kept equal to pods-served.yaml's selector)."""
KWOK_GROUP: Final = "kwok.x-k8s.io"
KWOK_VERSION: Final = "v1alpha1"
POLL_SECONDS: Final = 1.0
"""How often the pod list is compared with what runs (a reconcile interval, not synchronisation)."""
HEALTH_TIMEOUT_S: Final = 2.0
HEALTH_DEADLINE_S: Final = 300.0
"""How long a started runtime may take to answer ``/health`` before the attempt counts as failed."""
RETRY_FIRST_S: Final = 2.0
RETRY_MAX_S: Final = 60.0
API_KEY_ENV: Final = "KAITO_API_KEY"
"""The variable the runtime reads its API key from (``model_images.cli``'s ``--api-key`` default)."""
STOP_GRACE_S: Final = 15.0
DEFAULT_PORT: Final = 80
OFFLINE_ENVIRONMENT: Final = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
"""The runtime loads the sandbox's local model only: Hugging Face libraries never go online."""


def is_served(pod: dict[str, Any]) -> bool:
    containers = (pod.get("spec") or {}).get("containers") or []
    return any((container.get("command") or [""])[0] in SERVED_COMMANDS for container in containers)


class NotServable(Exception):
    """This attempt to serve a pod failed; ``reason`` (CamelCase) goes to its Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def retry_delay(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: doubling, capped."""
    return float(min(RETRY_FIRST_S * 2 ** max(failures - 1, 0), RETRY_MAX_S))


@dataclass(frozen=True)
class SecretKey:
    """Where a container's API key lives: one key of one Secret in the pod's namespace."""

    name: str
    key: str


_VARIABLE_REFERENCE: Final = re.compile(r"^\$\(([A-Za-z_][A-Za-z0-9_]*)\)$")


def _api_key_source(container: dict[str, Any], command: list[str]) -> str | SecretKey | None:
    """The key ``--api-key`` gives: the literal, or the Secret key behind a ``$(VAR)`` reference."""
    value = _flag(command, "--api-key")
    if value is None:
        return None
    reference = _VARIABLE_REFERENCE.match(value)
    if reference is None:
        return value
    variable = reference.group(1)
    for entry in container.get("env") or []:
        if entry.get("name") != variable:
            continue
        if entry.get("value") is not None:
            return str(entry["value"])
        secret_ref = (entry.get("valueFrom") or {}).get("secretKeyRef") or {}
        if secret_ref.get("name") and secret_ref.get("key"):
            return SecretKey(str(secret_ref["name"]), str(secret_ref["key"]))
        raise NotServable("ApiKeyUnresolvable", f"--api-key $({variable}): only a value or a secretKeyRef is read")
    raise NotServable("ApiKeyUnresolvable", f"--api-key $({variable}): the container sets no {variable}")


def _flag(command: list[str], name: str) -> str | None:
    for index, word in enumerate(command):
        if word == name and index + 1 < len(command):
            return command[index + 1]
        if word.startswith(f"{name}="):
            return word.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class ServedContainer:
    """What the runtime needs from the pod's served container."""

    name: str
    image: str
    port: int
    max_input_tokens: int | None
    max_total_tokens: int | None
    api_key: str | SecretKey | None = None
    """The API key its command asks for (``--api-key``), literal or from a Secret; None: no key."""


def served_container(pod: dict[str, Any]) -> ServedContainer:
    """The first served container: its port and token limits read from its command's flags (TGI and
    the runtime spell them alike), the port falling back to its first ``containerPort``."""
    container = next(item for item in pod["spec"]["containers"] if (item.get("command") or [""])[0] in SERVED_COMMANDS)
    command = [str(word) for word in container.get("command") or []] + [str(w) for w in container.get("args") or []]
    ports = [int(p["containerPort"]) for p in container.get("ports") or [] if p.get("containerPort")]
    port = _flag(command, "--port")
    max_input = _flag(command, "--max-input-tokens")
    max_total = _flag(command, "--max-total-tokens")
    return ServedContainer(
        name=container["name"],
        image=container.get("image", ""),
        port=int(port) if port else (ports[0] if ports else DEFAULT_PORT),
        max_input_tokens=int(max_input) if max_input else None,
        max_total_tokens=int(max_total) if max_total else None,
        api_key=_api_key_source(container, command),
    )


_UNREADABLE_CONTAINER: Final = ServedContainer("", "", DEFAULT_PORT, None, None)
"""Stands for a served container whose command the runner cannot follow (the pod is not served)."""


def cri_line(stream: str, text: str, now: datetime | None = None) -> str:
    """One line as kubelets write container logs (CRI format), which kwok's log reader parses."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {text}\n"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class ServedPod:
    namespace: str
    name: str
    uid: str
    ip: str
    container: ServedContainer
    netns: str | None = None
    process: asyncio.subprocess.Process | None = None
    serve_task: asyncio.Task[None] | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    """The log copiers."""
    failures: int = 0
    """Failed attempts in a row (reset once the runtime answers)."""
    retry_at: float | None = None
    """Event-loop time of the next attempt after a failure; None while an attempt runs or serves."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class PodRunner:
    def __init__(self, api: client.ApiClient, state_dir: Path, model_dir: Path, record: NetworkRecord) -> None:
        self._api = api
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self._state_dir = state_dir
        self._model_dir = model_dir
        self._record = record
        self._served: dict[str, ServedPod] = {}
        self._network_lock = threading.Lock()
        """``ip`` runs in worker threads, which finish even when their awaiting task is cancelled: the
        record (and network.json) is changed by one thread at a time."""

    # --- reconcile -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        log.info("serving preset pods (network: %s, pod range %s)", self._record.mode, self._record.pod_range)
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except (
                    ApiException,
                    aiohttp.ClientError,
                    TimeoutError,
                    subprocess.SubprocessError,
                    pod_network.PodNetworkError,
                ) as error:
                    log.warning("reconciling pods failed, retrying: %s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), POLL_SECONDS)
        finally:
            for uid in list(self._served):
                try:
                    await self._stop(uid)
                except (subprocess.SubprocessError, pod_network.PodNetworkError, OSError) as error:
                    log.warning("stopping %s failed (`kaito sandbox down` removes what is left): %s", uid, error)

    async def reconcile(self) -> None:
        pods = await self._core.list_pod_for_all_namespaces(_request_timeout=REQUEST_TIMEOUT)
        wanted: dict[str, dict[str, Any]] = {}
        for item in pods.items:
            raw = self._api.sanitize_for_serialization(item)
            meta, spec, status = raw["metadata"], raw.get("spec") or {}, raw.get("status") or {}
            if meta.get("deletionTimestamp") or not spec.get("nodeName") or not is_served(raw):
                continue
            if status.get("podIP"):
                wanted[meta["uid"]] = raw
        now = asyncio.get_running_loop().time()
        for uid in list(self._served):
            pod = wanted.get(uid)
            if pod is None or pod["status"]["podIP"] != self._served[uid].ip:
                await self._stop(uid)
            elif (retry_at := self._served[uid].retry_at) is not None and now >= retry_at:
                failures = self._served[uid].failures
                await self._stop(uid)
                log.info("pod %s: serving it again (attempt %d)", pod["metadata"]["name"], failures + 1)
                self._start(pod, failures)
        for uid, pod in wanted.items():
            if uid not in self._served:
                self._start(pod)

    # --- one pod -------------------------------------------------------------------------------
    def _start(self, pod: dict[str, Any], failures: int = 0) -> None:
        meta = pod["metadata"]
        problem: NotServable | None = None
        try:
            container = served_container(pod)
        except NotServable as error:  # reported (and retried) by _serve, like any failed attempt
            container, problem = _UNREADABLE_CONTAINER, error
        served = ServedPod(meta["namespace"], meta["name"], meta["uid"], pod["status"]["podIP"], container)
        served.failures = failures
        self._served[served.uid] = served
        served.serve_task = asyncio.create_task(self._serve(served, pod, problem), name=f"serve {served.key}")

    async def _serve(self, served: ServedPod, pod: dict[str, Any], problem: NotServable | None = None) -> None:
        """One attempt: serve the pod, then watch its runtime; any failure schedules the next one."""
        try:
            if problem is not None:
                raise problem
            await self._serve_once(served, pod)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._failed(served, pod, error)

    async def _failed(self, served: ServedPod, pod: dict[str, Any], error: Exception) -> None:
        served.failures += 1
        delay = retry_delay(served.failures)
        reason = error.reason if isinstance(error, NotServable) else "ServingFailed"
        message = str(error) or type(error).__name__
        if isinstance(error, NotServable):
            log.warning("pod %s is not served (%s): %s; again in %.0fs", served.key, reason, message, delay)
        else:
            log.warning("pod %s could not be served: %r; again in %.0fs", served.key, error, delay, exc_info=error)
        await _end_process(served)
        try:
            await self._mark_not_ready(served, pod, reason, message)
        except (ApiException, aiohttp.ClientError, TimeoutError) as patch_error:
            log.warning("pod %s: could not set Ready False: %s", served.key, patch_error)
        served.retry_at = asyncio.get_running_loop().time() + delay

    async def _serve_once(self, served: ServedPod, pod: dict[str, Any]) -> None:
        api_key = await self._api_key(served)
        environment = {**os.environ, **OFFLINE_ENVIRONMENT}
        environment.pop(API_KEY_ENV, None)  # never the runner's own: the pod's key or none
        if api_key is not None:
            environment[API_KEY_ENV] = api_key
        host = await self._prepare_network(served)
        log_file = self._log_file(served)
        argv = [
            sys.executable,
            "-m",
            "model_images.runtime",
            "serve",
            "--model",
            str(self._model_dir),
            "--host",
            host,
            "--port",
            str(served.container.port),
            "--model-id",
            served.container.image or str(self._model_dir),
        ]
        if served.container.max_total_tokens:
            argv += ["--max-total-tokens", str(served.container.max_total_tokens)]
        if served.container.max_input_tokens:
            argv += ["--max-input-tokens", str(served.container.max_input_tokens)]
        if served.netns is not None:
            argv = ["ip", "netns", "exec", served.netns, *argv]
        log.info("pod %s: starting the runtime on %s:%d", served.key, served.ip, served.container.port)
        served.process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent,
            env=environment,
        )
        for stream_name in ("stdout", "stderr"):
            stream = getattr(served.process, stream_name)
            served.tasks.append(asyncio.create_task(_copy_log(stream, stream_name, log_file)))
        await self._create_kwok_objects(served, pod, log_file)
        await self._annotate_served(served)
        await self._await_health(served)
        await self._mark_ready(served, pod)
        served.failures = 0
        log.info("pod %s: the runtime answers; marked Ready", served.key)
        code = await served.process.wait()
        raise NotServable("RuntimeExited", f"the runtime exited with code {code} after it was Ready")

    async def _api_key(self, served: ServedPod) -> str | None:
        """The key the container's ``--api-key`` names, read from its Secret when it names one."""
        source = served.container.api_key
        if not isinstance(source, SecretKey):
            return source
        try:
            secret = await self._core.read_namespaced_secret(
                source.name, served.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as error:
            if error.status == 404:
                raise NotServable(
                    "ApiKeySecretMissing", f"Secret {served.namespace}/{source.name} does not exist"
                ) from None
            raise
        encoded = (secret.data or {}).get(source.key)
        if not encoded:
            raise NotServable("ApiKeySecretMissing", f"Secret {served.namespace}/{source.name} has no key {source.key}")
        try:
            return base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise NotServable(
                "ApiKeySecretInvalid", f"Secret {served.namespace}/{source.name} key {source.key} is not UTF-8 text"
            ) from None

    async def _prepare_network(self, served: ServedPod) -> str:
        """Make the pod's address exist; return the address its server binds."""
        if self._record.mode == "namespaces":
            served.netns = pod_network.pod_namespace_name(self._record, served.uid)  # cleaned up even if cut short
            await asyncio.to_thread(
                self._locked, pod_network.create_pod_namespace, self._state_dir, self._record, served.uid, served.ip
            )
            log.info("pod %s: network namespace %s holds %s", served.key, served.netns, served.ip)
            return "0.0.0.0"
        if not pod_network.in_range(self._record, served.ip):
            raise pod_network.PodNetworkError(f"pod IP {served.ip} is outside {self._record.pod_range}")
        return served.ip  # loopback: every 127.x address is this machine's

    def _locked(self, function: Callable[..., _T], *args: Any) -> _T:
        with self._network_lock:
            return function(*args)

    def _log_file(self, served: ServedPod) -> Path:
        folder = self._state_dir / "pods" / f"{served.namespace}_{served.name}_{served.uid}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{served.container.name}.log"

    async def _create_kwok_objects(self, served: ServedPod, pod: dict[str, Any], log_file: Path) -> None:
        owner = {"apiVersion": "v1", "kind": "Pod", "name": served.name, "uid": served.uid}
        metadata = {"name": served.name, "namespace": served.namespace, "ownerReferences": [owner]}
        objects = {
            "logs": {"kind": "Logs", "spec": {"logs": [{"containers": [], "logsFile": str(log_file), "follow": True}]}},
            "portforwards": {
                "kind": "PortForward",
                "spec": {"forwards": [{"target": {"address": served.ip, "port": served.container.port}}]},
            },
        }
        for plural, content in objects.items():
            body = {"apiVersion": f"{KWOK_GROUP}/{KWOK_VERSION}", "metadata": metadata, **content}
            try:
                await self._custom.create_namespaced_custom_object(
                    KWOK_GROUP, KWOK_VERSION, served.namespace, plural, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as error:
                if error.status != 409:
                    raise

    async def _annotate_served(self, served: ServedPod) -> None:
        patch = {"metadata": {"annotations": {c.ANNOTATION_SANDBOX_SERVED: "true"}}}
        await self._core.patch_namespaced_pod(served.name, served.namespace, patch, _request_timeout=REQUEST_TIMEOUT)

    async def _await_health(self, served: ServedPod) -> None:
        """Poll ``/health`` until 200; NotServable when the runtime exits first or the deadline passes."""
        url = f"http://{served.ip}:{served.container.port}/health"
        timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
        deadline = asyncio.get_running_loop().time() + HEALTH_DEADLINE_S
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while served.process is not None and served.process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                if asyncio.get_running_loop().time() > deadline:
                    raise NotServable("RuntimeNotHealthy", f"/health did not answer within {HEALTH_DEADLINE_S:.0f}s")
                await asyncio.sleep(0.5)  # a readiness probe's period
        code = served.process.returncode if served.process else None
        raise NotServable("RuntimeExited", f"the runtime exited with code {code} before answering /health")

    async def _mark_ready(self, served: ServedPod, pod: dict[str, Any]) -> None:
        now = _now()
        statuses = []
        for container in pod["spec"]["containers"]:
            statuses.append(
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            )
        patch = {
            "status": {
                "conditions": [
                    {"type": "ContainersReady", "status": "True", "reason": None, "lastTransitionTime": now},
                    {"type": "Ready", "status": "True", "reason": None, "lastTransitionTime": now},
                ],
                "containerStatuses": statuses,
            }
        }
        await self._core.patch_namespaced_pod_status(
            served.name, served.namespace, patch, _request_timeout=REQUEST_TIMEOUT
        )

    async def _mark_not_ready(self, served: ServedPod, pod: dict[str, Any], reason: str, message: str) -> None:
        now = _now()
        condition = {"status": "False", "reason": reason, "message": message, "lastTransitionTime": now}
        statuses = [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": served.failures,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
            for container in pod["spec"]["containers"]
        ]
        patch = {
            "status": {
                "conditions": [{"type": "ContainersReady", **condition}, {"type": "Ready", **condition}],
                "containerStatuses": statuses,
            }
        }
        await self._core.patch_namespaced_pod_status(
            served.name, served.namespace, patch, _request_timeout=REQUEST_TIMEOUT
        )

    async def _stop(self, uid: str) -> None:
        served = self._served.pop(uid)
        if served.serve_task is not None:  # first, so a runtime we end is not reported as a failure
            served.serve_task.cancel()
            await asyncio.gather(served.serve_task, return_exceptions=True)
        process = served.process
        if process is not None and process.returncode is None:
            log.info("pod %s: stopping its runtime (pid %d)", served.key, process.pid)
        await _end_process(served)
        for task in served.tasks:
            task.cancel()
        await asyncio.gather(*served.tasks, return_exceptions=True)
        if served.netns is not None:
            await asyncio.to_thread(
                self._locked, pod_network.delete_pod_namespace, self._state_dir, self._record, served.netns
            )
            log.info("pod %s: removed network namespace %s", served.key, served.netns)


async def _end_process(served: ServedPod) -> None:
    """SIGTERM the pod's runtime, SIGKILL after a grace period; nothing when it is not running."""
    process = served.process
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _copy_log(stream: asyncio.StreamReader | None, name: str, path: Path) -> None:
    if stream is None:
        return
    with path.open("a", encoding="utf-8") as handle:
        async for raw in stream:
            handle.write(cri_line(name, raw.decode(errors="replace").rstrip("\n")))
            handle.flush()


async def _main(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    record = NetworkRecord.load(state_dir)
    if record is None:
        print(f"error: no {pod_network.RECORD_FILE} in {state_dir}: `kaito sandbox up` writes it", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with await api_client_from_kubeconfig(Path(args.kubeconfig)) as api:
        await PodRunner(api, state_dir, Path(args.model), record).run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.pod_runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--model", required=True, help="the model directory every served pod's runtime loads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
