"""A throwaway certificate authority and server certificate for the simulator's HTTPS endpoint.

The Azure SDK's bearer-token policy and azure-identity's authority check both refuse plain HTTP,
so the simulator must speak TLS; clients trust it by pointing ``connection_verify`` at the CA file.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from sandbox.pki import issue, make_ca, write_cert, write_key


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    """PEM of the CA: what clients pass as ``connection_verify``."""
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def generate(directory: Path, hostnames: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")) -> TlsFiles:
    """Write a fresh CA and a server certificate for ``hostnames`` (DNS names or IPs) into
    ``directory`` and return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ips, dns = [], []
    for host in hostnames:
        try:
            ipaddress.ip_address(host)
            ips.append(host)
        except ValueError:
            dns.append(host)
    ca = make_ca("kaito-py AKS simulator CA")
    server = issue(ca, hostnames[0], dns_names=tuple(dns), ip_addresses=tuple(ips), server=True)
    files = TlsFiles(
        ca_cert=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
    )
    write_cert(ca[0], files.ca_cert)
    write_cert(server[0], files.server_cert)
    write_key(server[1], files.server_key)
    return files
