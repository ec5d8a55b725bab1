"""The webhook's certificates: issued, trusted by a TLS client, renewed when due, kept when not."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
from pathlib import Path

from cryptography import x509

from kaito_operator.webhook.certs import bundle_certificates, renew

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
HOSTS = ["kaito-webhook.kaito.svc", "127.0.0.1"]


def test_a_fresh_set_covers_the_hosts_and_verifies_against_its_ca() -> None:
    made = renew(None, HOSTS, NOW)
    assert made is not None
    cert = x509.load_pem_x509_certificate(made.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kaito-webhook.kaito.svc" in san.get_values_for_type(x509.DNSName)
    [ca] = bundle_certificates(made.ca_bundle)
    cert.verify_directly_issued_by(ca)  # raises when not
    # And the standard library's TLS stack accepts the pair and the CA.
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "c").write_bytes(made.cert)
        Path(folder, "k").write_bytes(made.key)
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(Path(folder, "c"), Path(folder, "k"))
    ssl.create_default_context(cadata=made.ca_bundle.decode())


def test_a_good_set_is_kept() -> None:
    made = renew(None, HOSTS, NOW)
    assert made is not None
    assert renew(made, HOSTS, NOW + dt.timedelta(days=30)) is None


def test_the_serving_certificate_is_renewed_with_the_same_ca_when_two_thirds_are_used() -> None:
    made = renew(None, HOSTS, NOW)
    assert made is not None
    later = renew(made, HOSTS, NOW + dt.timedelta(days=250))
    assert later is not None and later.cert != made.cert and later.ca_bundle == made.ca_bundle


def test_new_hosts_get_a_new_serving_certificate() -> None:
    made = renew(None, HOSTS, NOW)
    assert made is not None
    later = renew(made, [*HOSTS, "other.svc"], NOW)
    assert later is not None and later.ca_bundle == made.ca_bundle


def test_a_renewed_ca_is_published_beside_the_old_one() -> None:
    made = renew(None, HOSTS, NOW)
    assert made is not None
    later = renew(made, HOSTS, NOW + dt.timedelta(days=2500))  # past two thirds of the CA's 10 years
    assert later is not None
    bundle = bundle_certificates(later.ca_bundle)
    assert len(bundle) == 2 and bundle[1] == bundle_certificates(made.ca_bundle)[0]
    x509.load_pem_x509_certificate(later.cert).verify_directly_issued_by(bundle[0])
