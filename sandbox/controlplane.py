"""A real local Kubernetes control plane, run as child processes on free 127.0.0.1 ports.

Profiles:
  ``apiserver``  etcd + kube-apiserver: enough for CRDs, admission and controllers' API traffic.
  ``full``       + kube-controller-manager, kube-scheduler and kwok, which plays the kubelet of every
                 node, so Deployments get scheduled, Running and Ready pods on fake nodes.

Everything a run creates lives in one state folder: PKI, the admin kubeconfig, etcd's data, a log per
component and ``state.json`` (process ids), from which ``stop_from_state`` finds and stops a control
plane started by another process (``kaito sandbox down``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TextIO

import yaml

from sandbox.binaries import Binaries, ensure_binaries
from sandbox.pki import SERVICE_CLUSTER_IP_RANGE, Pki, write_control_plane_pki

Profile = Literal["apiserver", "full"]
PROFILES: Final[tuple[Profile, ...]] = ("apiserver", "full")
KWOK_DIR: Final = Path(__file__).resolve().parent / "kwok"
STAGES_FILE: Final = KWOK_DIR / "stages.yaml"
PRETEND_POD_STAGES: Final = KWOK_DIR / "pods-pretend.yaml"
SERVED_POD_STAGES: Final = KWOK_DIR / "pods-served.yaml"
KWOK_CRDS_FILE: Final = KWOK_DIR / "crds.yaml"
DEFAULT_POD_CIDR: Final = "10.244.0.1/16"
"""kwok's pod IPs when the sandbox has no range of its own (without root, pods not served): addresses
that exist nowhere, never to be dialled. As root the sandbox always reserves a guarded range
(``sandbox.pod_network.reserve``) instead."""
STATE_FILE: Final = "state.json"
MARKER_FILE: Final = ".kaito-sandbox"
"""Marks a folder as a sandbox state folder: only such folders (or empty ones) are ever wiped."""
LOG_TAIL_LINES: Final = 40
_PR_SET_PDEATHSIG: Final = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started (the message carries the failing component's log)."""


class PortTaken(ControlPlaneError):
    """A component could not bind the port chosen for it: another process took it between the choice
    (``free_port``) and the bind. Starting again with new ports fixes it."""


PORT_ATTEMPTS: Final = 3
"""Starts tried with freshly chosen ports when a component finds its port taken."""
_PORT_IN_USE: Final = "address already in use"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "kaito-py" / "sandbox"


def die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when its parent dies.

    This is what stops the control plane when a test session is killed outright.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class RunningProcess:
    name: str
    argv: list[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    pid: int = 0

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            content = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(content[-lines:])


@dataclass
class ControlPlane:
    """One control plane. ``start()`` brings it up and waits until it serves; ``stop()`` ends it."""

    state_dir: Path
    profile: Profile = "full"
    binaries: Binaries | None = None
    die_with_parent: bool = True
    """Tie the processes to this Python process (tests, foreground CLI); False leaves them running."""
    out: TextIO = field(default=sys.stderr)
    pod_cidr: str = DEFAULT_POD_CIDR
    """kwok's ``--cidr``: where pod IPs come from (the sandbox's own range when it serves pods)."""
    serve_pods: bool = False
    """Preset pods wait for the sandbox's pod runner instead of pretending to be Ready, and kwok reads
    per-pod Logs and PortForward objects (their CRDs are installed before kwok starts)."""
    processes: list[RunningProcess] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)
    pki: Pki | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> ControlPlane:
        if self.profile not in PROFILES:
            raise ControlPlaneError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if is_running(self.state_dir):
            raise ControlPlaneError(
                f"a control plane is already running from {self.state_dir}; stop it with "
                f"`kaito sandbox down --state-dir {self.state_dir}` or pick another --state-dir"
            )
        _refuse_foreign_folder(self.state_dir)
        binaries = self.binaries or ensure_binaries(self.out)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_components(binaries, time.monotonic() + timeout)
                break
            except PortTaken as error:
                if attempt == PORT_ATTEMPTS:
                    raise
                print(f"{error.args[0].splitlines()[0]}; starting again with new ports", file=self.out)
        self._write_state()
        return self

    def _start_components(self, binaries: Binaries, deadline: float) -> None:
        """A fresh state folder and fresh ports, then each component in order; on failure everything
        started so far is stopped."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        self.log_dir.mkdir(parents=True)
        (self.state_dir / MARKER_FILE).write_text("state of a kaito sandbox; `kaito sandbox down` removes it\n")
        self.pki = write_control_plane_pki(self.state_dir / "pki")
        self.ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
        self._write_kubeconfig()
        try:
            self._spawn("etcd", self._etcd_argv(binaries))
            self._await("etcd", deadline, http_probe(f"http://127.0.0.1:{self.ports['etcd']}/health"))
            self._spawn("kube-apiserver", self._apiserver_argv(binaries))
            self._await("kube-apiserver", deadline, self._apiserver_probe("/readyz"))
            if self.profile == "full":
                if self.serve_pods:
                    self._install_kwok_crds(deadline)
                self._spawn("kube-controller-manager", self._kcm_argv(binaries))
                self._spawn("kube-scheduler", self._scheduler_argv(binaries))
                self._spawn("kwok", self._kwok_argv(binaries))
                insecure = ssl.create_default_context()
                insecure.check_hostname = False
                insecure.verify_mode = ssl.CERT_NONE
                kcm = f"https://127.0.0.1:{self.ports['kcm']}/healthz"
                self._await("kube-controller-manager", deadline, http_probe(kcm, insecure))
                scheduler = f"https://127.0.0.1:{self.ports['scheduler']}/healthz"
                self._await("kube-scheduler", deadline, http_probe(scheduler, insecure))
                self._await("kwok", deadline, http_probe(f"http://127.0.0.1:{self.ports['kwok']}/healthz"))
                # Pods are refused in a namespace until the controller-manager made its ServiceAccount.
                default_sa = "/api/v1/namespaces/default/serviceaccounts/default"
                self._await("kube-controller-manager", deadline, self._apiserver_probe(default_sa))
        except BaseException:
            self.stop()
            raise

    def add_process(
        self,
        name: str,
        argv: list[str],
        ready: Callable[[], bool],
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
    ) -> None:
        """Run one more process as part of this control plane (the AKS simulator, the operator): it
        is stopped with the rest and recorded in ``state.json``. ``ready`` is polled until True."""
        self._spawn(name, argv, env)
        try:
            self._await(name, time.monotonic() + timeout, ready)
        except BaseException:
            self.stop()
            raise
        self._write_state()

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Stop one component (SIGTERM, as a rolling upgrade or a crash-looping pod would) and start
        it again with the same flags and ports; return when it serves again. For chaos drills:
        clients see their connections and watches cut and must recover."""
        index = next((i for i, p in enumerate(self.processes) if p.name == name), None)
        if index is None:
            raise ControlPlaneError(f"no component named {name!r}; running: {[p.name for p in self.processes]}")
        probe = self._probes().get(name)
        if probe is None:
            raise ControlPlaneError(f"{name} cannot be restarted (no readiness probe is known for it)")
        old = self.processes.pop(index)
        _terminate_group(old.pid, grace=10.0, process=old.process)
        self._spawn(name, old.argv, append_log=True)
        self.processes.insert(index, self.processes.pop())  # keep the stop order
        self._await(name, time.monotonic() + timeout, probe)
        self._write_state()

    def _probes(self) -> dict[str, Callable[[], bool]]:
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        probes = {
            "etcd": http_probe(f"http://127.0.0.1:{self.ports['etcd']}/health"),
            "kube-apiserver": self._apiserver_probe("/readyz"),
        }
        if self.profile == "full":
            probes["kube-controller-manager"] = http_probe(f"https://127.0.0.1:{self.ports['kcm']}/healthz", insecure)
            probes["kube-scheduler"] = http_probe(f"https://127.0.0.1:{self.ports['scheduler']}/healthz", insecure)
            probes["kwok"] = http_probe(f"http://127.0.0.1:{self.ports['kwok']}/healthz")
        return probes

    def stop(self, grace: float = 10.0) -> None:
        """Stop every process (SIGTERM, then SIGKILL after ``grace``) in reverse start order."""
        for proc in reversed(self.processes):
            _terminate_group(proc.pid, grace, proc.process)
        self.processes.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / STATE_FILE).unlink()

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- processes ------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, *, append_log: bool = False
    ) -> None:
        log = self.log_dir / f"{name}.log"
        with open(log, "ab" if append_log else "wb") as handle:
            process = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # own process group: stopping it stops anything it forked
                preexec_fn=die_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        self.processes.append(RunningProcess(name, argv, log, process, process.pid))

    def _await(self, name: str, deadline: float, probe: Callable[[], bool]) -> None:
        proc = next(p for p in self.processes if p.name == name)
        while True:
            if proc.process is not None and proc.process.poll() is not None:
                tail = proc.tail()
                if _PORT_IN_USE in tail:
                    raise PortTaken(f"{name} could not bind its port (taken meanwhile); {proc.log}:\n{tail}")
                raise ControlPlaneError(
                    f"{name} exited with code {proc.process.returncode} during start-up; "
                    f"last lines of {proc.log}:\n{tail}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{name} was not ready in time; last lines of {proc.log}:\n{proc.tail()}")
            time.sleep(0.2)  # a health-check poll interval, not synchronisation

    def _install_kwok_crds(self, deadline: float) -> None:
        """Create kwok's Logs and PortForward CRDs and wait until they are served (kwok watches them
        from its start)."""
        pki = self._started_pki()
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        base = f"{self.server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        names = []
        for crd in yaml.safe_load_all(KWOK_CRDS_FILE.read_text()):
            request = urllib.request.Request(
                base, data=json.dumps(crd).encode(), headers={"Content-Type": "application/json"}, method="POST"
            )
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                response.read()
            names.append(crd["metadata"]["name"])
        for name in names:
            self._await("kube-apiserver", deadline, _established_probe(f"{base}/{name}", context))

    def _started_pki(self) -> Pki:
        if self.pki is None:
            raise ControlPlaneError("the control plane's certificates do not exist yet: start() writes them")
        return self.pki

    def _apiserver_probe(self, path: str) -> Callable[[], bool]:
        pki = self._started_pki()
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        return http_probe(f"{self.server}{path}", context)

    # --- component flags ------------------------------------------------------------------

    def _etcd_argv(self, b: Binaries) -> list[str]:
        client = f"http://127.0.0.1:{self.ports['etcd']}"
        peer = f"http://127.0.0.1:{self.ports['etcd-peer']}"
        return [
            str(b.etcd),
            "--name=sandbox",
            f"--data-dir={self.state_dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=sandbox={peer}",
            "--unsafe-no-fsync=true",  # throwaway data: fsync only slows tests down
            "--auto-compaction-retention=1",
            "--log-level=warn",
        ]

    def _apiserver_argv(self, b: Binaries) -> list[str]:
        pki = self._started_pki()
        argv = [
            str(b.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",  # no default route in sandboxes: never guess an address
            f"--secure-port={self.ports['apiserver']}",
            f"--cert-dir={self.state_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            "--v=1",
        ]
        if self.profile == "apiserver":
            # No controller-manager creates `default` ServiceAccounts, so pods would be refused.
            argv.append("--disable-admission-plugins=ServiceAccount")
        return argv

    def _component_common(self, port_name: str) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports[port_name]}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            "--v=1",
        ]

    def _kcm_argv(self, b: Binaries) -> list[str]:
        pki = self._started_pki()
        return [
            str(b.kube_controller_manager),
            *self._component_common("kcm"),
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--use-service-account-credentials=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
        ]

    def _scheduler_argv(self, b: Binaries) -> list[str]:
        return [str(b.kube_scheduler), *self._component_common("scheduler")]

    def _kwok_argv(self, b: Binaries) -> list[str]:
        port = self.ports["kwok"]
        return [
            str(b.kwok),
            f"--kubeconfig={self.kubeconfig}",
            f"--config={STAGES_FILE}",
            f"--config={SERVED_POD_STAGES if self.serve_pods else PRETEND_POD_STAGES}",
            "--manage-all-nodes=true",
            "--node-ip=127.0.0.1",
            f"--node-port={port}",
            # kwok serves HTTP and HTTPS (a self-signed certificate, which the API server does not
            # check) on one port: the API server's pods/log and pods/portforward come here.
            f"--server-address=127.0.0.1:{port}",
            f"--cidr={self.pod_cidr}",
            "--node-lease-duration-seconds=40",
            *(["--enable-crds=Logs,PortForward"] if self.serve_pods else []),
        ]

    # --- files ----------------------------------------------------------------------------

    def _write_kubeconfig(self) -> None:
        pki = self._started_pki()

        def data(path: Path) -> str:
            return b64encode(path.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kaito-sandbox",
                    "cluster": {"server": self.server, "certificate-authority-data": data(pki.ca_cert)},
                }
            ],
            "users": [
                {
                    "name": "kaito-admin",
                    "user": {
                        "client-certificate-data": data(pki.admin_cert),
                        "client-key-data": data(pki.admin_key),
                    },
                }
            ],
            "contexts": [{"name": "kaito-sandbox", "context": {"cluster": "kaito-sandbox", "user": "kaito-admin"}}],
            "current-context": "kaito-sandbox",
        }
        self.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
        self.kubeconfig.chmod(0o600)

    def _write_state(self) -> None:
        state = {
            "profile": self.profile,
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "ports": self.ports,
            "processes": [{"name": p.name, "pid": p.pid, "executable": p.argv[0]} for p in self.processes],
        }
        (self.state_dir / STATE_FILE).write_text(json.dumps(state, indent=2))


def http_probe(url: str, context: ssl.SSLContext | None = None) -> Callable[[], bool]:
    """A readiness check: True once ``url`` answers 200."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    return probe


def _established_probe(url: str, context: ssl.SSLContext) -> Callable[[], bool]:
    """A readiness check: True once the CRD at ``url`` has condition Established=True."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as response:
                conditions = json.loads(response.read()).get("status", {}).get("conditions") or []
        except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
            return False
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    return probe


def _refuse_foreign_folder(state_dir: Path) -> None:
    """Never wipe a folder the sandbox did not make (a mistyped --state-dir could be anything)."""
    if state_dir.exists() and any(state_dir.iterdir()) and not (state_dir / MARKER_FILE).exists():
        raise ControlPlaneError(
            f"{state_dir} is not empty and is not a sandbox state folder; choose an empty or new --state-dir"
        )


def _same_process(pid: int, executable: str) -> bool:
    """Guards against pid reuse: only signal a pid still running the binary we started."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return cmdline == executable


def _terminate_group(pid: int, grace: float, process: subprocess.Popen[bytes] | None = None) -> None:
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                break
        elif not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            break
        time.sleep(0.05)  # waiting for a process to exit
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads((state_dir / STATE_FILE).read_text())
        return loaded
    except (OSError, ValueError):
        return None


def is_running(state_dir: Path) -> bool:
    state = read_state(state_dir)
    if state is None:
        return False
    return any(_same_process(p["pid"], p["executable"]) for p in state.get("processes", []))


def stop_from_state(state_dir: Path, remove: bool = True) -> list[str]:
    """Stop a control plane started by another process; return the names of what was stopped."""
    state = read_state(state_dir)
    stopped = []
    if state is not None:
        for entry in reversed(state.get("processes", [])):
            if _same_process(entry["pid"], entry["executable"]):
                _terminate_group(entry["pid"], grace=10.0)
                stopped.append(entry["name"])
    if remove and state_dir.exists():
        _refuse_foreign_folder(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
    return stopped
