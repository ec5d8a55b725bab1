"""The webhook's certificates: a self-signed CA and a serving certificate it signs (``cryptography``).

Pure functions over PEM bytes: issue a CA, issue a serving certificate for some DNS names and IP
addresses, and decide when either needs renewing. Where they are kept (a Secret) and how the API
server learns the CA (the webhook configuration's caBundle) is ``keeper.py``'s job.

Lifetimes: the CA 10 years, the serving certificate 1 year; a certificate is renewed once less than
a third of its life is left, and the serving certificate also when it does not cover the names
asked for. A renewed CA is published next to the old one (the bundle holds both) until the old one
expires, so a replica still serving a certificate of the old CA stays trusted.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME: Final = dt.timedelta(days=3650)
SERVING_LIFETIME: Final = dt.timedelta(days=365)
_CLOCK_SKEW: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateSet:
    """What the Secret holds, as PEM: the CA bundle (the signing CA first), its key, the serving pair."""

    ca_bundle: bytes
    ca_key: bytes
    cert: bytes
    key: bytes


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_ca(now: dt.datetime, common_name: str = "kaito-webhook-ca") -> tuple[bytes, bytes]:
    """A new CA: (certificate PEM, key PEM)."""
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def issue_serving(ca_cert: bytes, ca_key: bytes, hosts: list[str], now: dt.datetime) -> tuple[bytes, bytes]:
    """A serving certificate for ``hosts`` (DNS names or IP addresses) signed by the CA: (cert, key) PEM."""
    issuer = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    assert isinstance(signer, ec.EllipticCurvePrivateKey), "the CA key is one this module made"
    key = _key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(min(now + SERVING_LIFETIME, issuer.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _due(cert: x509.Certificate, now: dt.datetime) -> bool:
    """Less than a third of the certificate's life is left (or it is not valid yet/any more)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now < start or now >= end - (end - start) / 3


def _covers(cert: x509.Certificate, hosts: list[str]) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    present = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return set(hosts) <= present


def bundle_certificates(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle) if bundle.strip() else []


def renew(current: CertificateSet | None, hosts: list[str], now: dt.datetime) -> CertificateSet | None:
    """The certificates to store instead of ``current``, or None when ``current`` is still good.

    The CA is kept unless it is due; the serving certificate is reissued when it is due, when the CA
    changed, or when it does not cover ``hosts``. Expired CAs leave the bundle.
    """
    cas = bundle_certificates(current.ca_bundle) if current else []
    ca_due = not cas or _due(cas[0], now)
    try:
        serving = x509.load_pem_x509_certificate(current.cert) if current else None
    except ValueError:
        serving = None
    if not ca_due and serving is not None and not _due(serving, now) and _covers(serving, hosts):
        return None
    if ca_due or current is None:
        ca_cert, ca_key = issue_ca(now)
        still_valid = [c for c in cas if c.not_valid_after_utc > now]
        bundle = ca_cert + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in still_valid)
    else:
        ca_cert, ca_key = cas[0].public_bytes(serialization.Encoding.PEM), current.ca_key
        bundle = current.ca_bundle
    cert, key = issue_serving(ca_cert, ca_key, hosts, now)
    return CertificateSet(ca_bundle=bundle, ca_key=ca_key, cert=cert, key=key)
