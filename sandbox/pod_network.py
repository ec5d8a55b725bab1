"""Network namespaces for the pods the sandbox serves: one per pod, holding the pod's IP.

As root, a sandbox reserves one private /24 for its pods (kwok hands pod IPs out of it) by adding
an ``unreachable`` route for the whole range: the kernel refuses a second identical route, so two
sandboxes never share a range, and traffic to a pod IP nobody serves fails on this machine instead
of leaving it. Each served pod then gets a namespace with a veth pair: ``eth0`` inside holds the
pod's IP (/32), the host end holds the range's gateway address (``.1``, which kwok never hands out)
and a /32 route to the pod. Inside, the only route is the link route to the gateway: replies need
no more, and without a default route nothing in the namespace reaches past this machine, even on a
host that forwards packets. The kube-apiserver's service proxy, kwok's port-forward and the runner's
health checks reach the pod through the host's /32 route; nothing else in the range is routed.

Every name starts with a prefix derived from the sandbox's id, and everything made is recorded in
``network.json`` in the state folder, so ``kaito sandbox down`` (or the next ``up`` after a crash)
removes exactly what this sandbox made.

As root the range is reserved whenever kwok hands out pod IPs, served or not, so even a pod nobody
serves has an address that fails here. Without root (or without ``ip``) there are no namespaces or
guard routes: served pods get loopback IPs (127.x) and their servers bind those (``network_mode``);
unserved pods get kwok's default range, which nothing may dial.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final, Literal

NetworkMode = Literal["namespaces", "loopback"]

RECORD_FILE: Final = "network.json"
NAMESPACE_PREFIX: Final = "kaito-sbx-"
LINK_PREFIX: Final = "ks"
"""Host-side veth names: ``ks`` + 4 hex of the sandbox id + 8 hex of the pod (14 chars; Linux allows 15)."""
RANGE_BASE: Final = ipaddress.IPv4Network("10.213.0.0/16")
"""The /24s tried for a sandbox's pods. Private (RFC 1918) and, being reserved by a route first, never
one this machine already routes elsewhere."""
LOOPBACK_RANGE: Final = ipaddress.IPv4Network("127.213.0.0/16")
_IP_TIMEOUT_S: Final = 10.0


class PodNetworkError(RuntimeError):
    """An ``ip`` command failed; the message carries its stderr."""


def network_mode() -> NetworkMode:
    """``namespaces`` when this process may create network namespaces (root, with iproute2)."""
    if os.geteuid() == 0 and shutil.which("ip") and Path("/proc/self/ns/net").exists():
        return "namespaces"
    return "loopback"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT_S, check=False)
    if check and result.returncode != 0:
        raise PodNetworkError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
    return result


@dataclass
class NetworkRecord:
    """What a sandbox made, as written to ``network.json``."""

    sandbox_id: str
    mode: NetworkMode
    pod_range: str
    """The /24 (or loopback /16) kwok hands pod IPs out of."""
    guard_route: bool = False
    """Whether this sandbox added the ``unreachable`` route that reserves ``pod_range``."""
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def namespace_prefix(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.sandbox_id}-"

    @property
    def link_prefix(self) -> str:
        return f"{LINK_PREFIX}{self.sandbox_id}"

    @property
    def gateway(self) -> str:
        return str(ipaddress.IPv4Network(self.pod_range).network_address + 1)

    @property
    def kwok_cidr(self) -> str:
        """kwok's ``--cidr``: it hands out the addresses after the one given, so pods start at ``.2``."""
        network = ipaddress.IPv4Network(self.pod_range)
        return f"{self.gateway}/{network.prefixlen}"

    def save(self, state_dir: Path) -> None:
        path = state_dir / RECORD_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path) -> NetworkRecord | None:
        try:
            raw = json.loads((state_dir / RECORD_FILE).read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError):
            return None


def reserve(mode: NetworkMode | None = None) -> NetworkRecord:
    """Choose this sandbox's pod range (reserving it with a guard route as root); the caller saves the
    record in the state folder (``NetworkRecord.save``) once that folder exists."""
    sandbox_id = uuid.uuid4().hex[:4]
    chosen = mode or network_mode()
    if chosen == "loopback":
        return NetworkRecord(sandbox_id, "loopback", str(LOOPBACK_RANGE))
    start = int(hashlib.sha256(sandbox_id.encode()).hexdigest(), 16) % 256
    for offset in range(256):
        candidate = list(RANGE_BASE.subnets(new_prefix=24))[(start + offset) % 256]
        if _ip("route", "add", "unreachable", str(candidate), check=False).returncode == 0:
            return NetworkRecord(sandbox_id, "namespaces", str(candidate), guard_route=True)
    raise PodNetworkError(f"every /24 of {RANGE_BASE} is already routed on this machine; remove stale sandboxes")


def pod_namespace_name(record: NetworkRecord, pod_uid: str) -> str:
    return f"{record.namespace_prefix}{pod_uid[:8]}"


def _link_name(record: NetworkRecord, pod_uid: str) -> str:
    return f"{record.link_prefix}{pod_uid[:8]}"  # a UID's first 8 characters are hex


def in_range(record: NetworkRecord, address: str) -> bool:
    try:
        return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(record.pod_range)
    except ValueError:
        return False


def create_pod_namespace(state_dir: Path, record: NetworkRecord, pod_uid: str, pod_ip: str) -> str:
    """Make the pod's namespace with ``pod_ip`` on its ``eth0`` and a route to it; return its name.

    Recorded before it is made, so a crash half-way still leaves a record to clean up from.
    """
    if not in_range(record, pod_ip) or pod_ip == record.gateway:
        raise PodNetworkError(f"pod IP {pod_ip} is outside this sandbox's range {record.pod_range}")
    namespace = pod_namespace_name(record, pod_uid)
    link = _link_name(record, pod_uid)
    record.namespaces.append(namespace)
    record.links.append(link)
    record.save(state_dir)
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        _ip("addr", "add", f"{record.gateway}/32", "dev", link)
        _ip("link", "set", link, "up")
        _ip("-n", namespace, "link", "set", "lo", "up")
        _ip("-n", namespace, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
        _ip("-n", namespace, "link", "set", "eth0", "up")
        _ip("-n", namespace, "route", "add", record.gateway, "dev", "eth0")
        _ip("route", "add", f"{pod_ip}/32", "dev", link, "src", record.gateway)
    except (PodNetworkError, subprocess.TimeoutExpired):
        delete_pod_namespace(state_dir, record, namespace)
        raise
    return namespace


def delete_pod_namespace(state_dir: Path, record: NetworkRecord, namespace: str) -> None:
    """Remove a pod's namespace and its veth (deleting one end of a veth deletes both; the route goes
    with the link)."""
    link = f"{record.link_prefix}{namespace.removeprefix(record.namespace_prefix)}"
    _ip("netns", "delete", namespace, check=False)
    if link in _existing_links():
        _ip("link", "delete", link, check=False)
    record.namespaces = [name for name in record.namespaces if name != namespace]
    record.links = [name for name in record.links if name != link]
    record.save(state_dir)


def _existing_namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _existing_links() -> list[str]:
    result = _ip("-o", "link", "show", check=False)
    names = []
    for line in result.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names


def release(record: NetworkRecord) -> list[str]:
    """Remove every namespace and link ``record`` names (also those with its prefix but not yet
    recorded) and its guard route; return what was removed. Safe to repeat."""
    if record.mode != "namespaces":
        return []
    removed = []
    namespaces = set(record.namespaces) | {n for n in _existing_namespaces() if n.startswith(record.namespace_prefix)}
    for namespace in sorted(namespaces):
        if _ip("netns", "delete", namespace, check=False).returncode == 0:
            removed.append(f"netns {namespace}")
    links = set(record.links) | {n for n in _existing_links() if n.startswith(record.link_prefix)}
    for link in sorted(links):
        if link in _existing_links() and _ip("link", "delete", link, check=False).returncode == 0:
            removed.append(f"link {link}")
    if record.guard_route and _ip("route", "del", "unreachable", record.pod_range, check=False).returncode == 0:
        removed.append(f"route {record.pod_range}")
    return removed


def remove_all(state_dir: Path) -> list[str]:
    """Release what the sandbox recorded in ``state_dir`` (``release``) and forget the record; return
    what was removed. Safe to repeat."""
    record = NetworkRecord.load(state_dir)
    removed = release(record) if record is not None else []
    with contextlib.suppress(FileNotFoundError):
        (state_dir / RECORD_FILE).unlink()
    return removed


def leftovers(record: NetworkRecord) -> list[str]:
    """Namespaces and links with this sandbox's prefix that still exist (for checks after ``down``)."""
    found = [n for n in _existing_namespaces() if n.startswith(record.namespace_prefix)]
    return found + [n for n in _existing_links() if n.startswith(record.link_prefix)]
