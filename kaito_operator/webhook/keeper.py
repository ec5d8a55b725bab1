"""Keeps the webhook's TLS certificate current, in the server and where the API server reads the CA.

Two sources, chosen by a setting:

- ``SecretCertificates`` (the default): the operator is its own CA. The certificates live in one
  Secret (``ca.crt`` = the CA bundle, ``ca.key``, ``tls.crt``, ``tls.key``). Every replica checks it
  every ``interval`` seconds: missing, due for renewal (certs.py) or not covering the Service's names
  → the replica writes new ones, with the resourceVersion it read, so when several replicas race one
  wins (409) and the others take its certificates on the next read. Each replica serves what the
  Secret holds, and writes the CA bundle into the ValidatingWebhookConfiguration's ``caBundle``
  (when that configuration exists: the chart or the sandbox registers it).
- ``FileCertificates`` (cert-manager): the serving pair is mounted from a cert-manager Secret; the
  operator only reads the files and reloads them when they change. cert-manager's CA injector
  writes the caBundle.

Both hand out one ``ssl.SSLContext``: reloading a certificate into it affects new connections only,
so a rotation never drops an admission in flight.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import logging
import os
import ssl
import tempfile
from pathlib import Path
from typing import Any, Protocol

from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import SECRET, VALIDATING_WEBHOOK_CONFIGURATION
from kaito_operator.webhook.certs import CertificateSet, renew

log = logging.getLogger(__name__)

SECRET_KEYS = {"ca_bundle": "ca.crt", "ca_key": "ca.key", "cert": "tls.crt", "key": "tls.key"}


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server may use for the webhook's Service, plus loopback (for a URL
    registration on 127.0.0.1, as the sandbox does)."""
    return [
        f"{service}.{namespace}.svc",
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc.cluster.local",
        "localhost",
        "127.0.0.1",
    ]


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` reads files only: write the pair to a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="kaito-webhook-") as folder:
        cert_path, key_path = Path(folder, "tls.crt"), Path(folder, "tls.key")
        cert_path.write_bytes(cert)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key)
        context.load_cert_chain(cert_path, key_path)


class Certificates(Protocol):
    ssl_context: ssl.SSLContext

    async def refresh(self, *, publish: bool = True) -> None:
        """Make sure the served certificate is current (raises when none can be had); ``publish``: and
        that the API server trusts it."""


class SecretCertificates:
    """Self-signed certificates kept in a Secret; see the module docstring."""

    def __init__(
        self,
        client: KubeClient,
        clock: Clock,
        *,
        namespace: str,
        secret_name: str,
        hosts: list[str],
        configuration_name: str,
        registration: dict[str, Any] | None = None,
    ) -> None:
        self._client = client
        self._clock = clock
        self._namespace = namespace
        self._secret_name = secret_name
        self._hosts = hosts
        self._configuration_name = configuration_name
        self._registration = registration
        self.ssl_context = _server_context()
        self.ca_bundle: bytes | None = None
        self._served: bytes | None = None

    async def refresh(self, *, publish: bool = True) -> None:
        certificates = await self._current_or_renewed()
        self.ca_bundle = certificates.ca_bundle
        if self._served is None:
            self._load(certificates)  # nothing served yet: no admission a new CA could break
        # Published before a new pair is served: the API server must trust its CA first. The bundle
        # holds the old CA and the new one, so connections with the current pair keep working.
        if publish and not await self._publish_ca_bundle(certificates.ca_bundle):
            log.warning(
                "webhook configuration %s kept changing while its CA bundle was written; "
                "serving the current certificate until the next refresh",
                self._configuration_name,
            )
            return
        if certificates.cert != self._served:
            self._load(certificates)

    def _load(self, certificates: CertificateSet) -> None:
        _load_pair(self.ssl_context, certificates.cert, certificates.key)
        self._served = certificates.cert
        log.info("webhook serving certificate loaded", extra={"secret": self._secret_name})

    async def _read(self) -> tuple[dict[str, Any] | None, CertificateSet | None]:
        try:
            secret = await self._client.get(SECRET, self._secret_name, self._namespace)
        except ApiError as error:
            if error.not_found:
                return None, None
            raise
        data = secret.get("data") or {}
        try:
            values = {field: base64.b64decode(data[key]) for field, key in SECRET_KEYS.items()}
        except (KeyError, ValueError):
            return secret, None  # not ours in full: replaced below
        return secret, CertificateSet(**values)

    async def _current_or_renewed(self) -> CertificateSet:
        secret, current = await self._read()
        renewed = renew(current, self._hosts, self._clock.utcnow())
        if renewed is None:
            assert current is not None
            return current
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self._secret_name,
                "namespace": self._namespace,
                "labels": {"app.kubernetes.io/managed-by": "kaito"},
            },
            "data": {key: base64.b64encode(getattr(renewed, field)).decode() for field, key in SECRET_KEYS.items()},
        }
        try:
            if secret is None:
                await self._client.create(SECRET, body)
            else:
                body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
                body["metadata"]["labels"] = {**(secret["metadata"].get("labels") or {}), **body["metadata"]["labels"]}
                await self._client.replace(SECRET, body)
        except ApiError as error:
            if error.status != 409:
                raise
            # Another replica wrote first: serve what it wrote.
            _, theirs = await self._read()
            if theirs is None:
                raise
            return theirs
        log.info("webhook certificates written", extra={"secret": self._secret_name, "hosts": self._hosts})
        return renewed

    async def _publish_ca_bundle(self, bundle: bytes) -> bool:
        """Write the CA bundle into the webhook configuration; with a ``registration`` (the sandbox's
        URL registration), also create the configuration or bring it back to the registration.
        A write conflict (someone changed the configuration meanwhile) is read again and retried
        once at once: the new serving pair waits for this write. False when it conflicted twice."""
        return await self._publish_once(bundle) or await self._publish_once(bundle)

    async def _publish_once(self, bundle: bytes) -> bool:
        """False when the write met a conflict (409); True when the bundle is in place or not wanted."""
        encoded = base64.b64encode(bundle).decode()
        configuration: dict[str, Any] | None = None
        try:
            configuration = await self._client.get(VALIDATING_WEBHOOK_CONFIGURATION, self._configuration_name)
        except ApiError as error:
            if not error.not_found:
                raise
        if configuration is None and self._registration is None:
            log.debug("webhook configuration %s is not registered yet", self._configuration_name)
            return True
        if self._registration is not None:
            desired = copy.deepcopy(self._registration["webhooks"])
            for webhook in desired:
                webhook["clientConfig"]["caBundle"] = encoded
            if configuration is None:
                body = {**copy.deepcopy(self._registration), "webhooks": desired}
                body["metadata"] = {**body["metadata"], "name": self._configuration_name}
                try:
                    await self._client.create(VALIDATING_WEBHOOK_CONFIGURATION, body)
                except ApiError as error:
                    if error.already_exists:
                        return False  # another replica registered it meanwhile: read it again
                    raise
                log.info("webhook registered", extra={"configuration": self._configuration_name})
                return True
            if _subset(desired, configuration.get("webhooks") or []):
                return True
            configuration["webhooks"] = desired
        else:
            assert configuration is not None
            webhooks = configuration.get("webhooks") or []
            if all((w.get("clientConfig") or {}).get("caBundle") == encoded for w in webhooks):
                return True
            for webhook in webhooks:
                webhook.setdefault("clientConfig", {})["caBundle"] = encoded
        try:
            await self._client.replace(VALIDATING_WEBHOOK_CONFIGURATION, configuration)
        except ApiError as error:
            if error.status != 409:
                raise
            return False  # changed meanwhile
        log.info("webhook CA bundle written", extra={"configuration": self._configuration_name})
        return True


def _subset(want: Any, have: Any) -> bool:
    """``want`` is contained in ``have`` (the API server adds defaults to what we wrote)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_subset(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(_subset, want, have))
    return bool(want == have)


class FileCertificates:
    """The serving pair mounted from files (cert-manager); reloaded when the files change."""

    def __init__(self, cert_dir: str) -> None:
        self._cert = Path(cert_dir, "tls.crt")
        self._key = Path(cert_dir, "tls.key")
        self.ssl_context = _server_context()
        self._stamp: tuple[float, float] | None = None

    async def refresh(self, *, publish: bool = True) -> None:
        stamp = (os.stat(self._cert).st_mtime, os.stat(self._key).st_mtime)
        if stamp == self._stamp:
            return
        self.ssl_context.load_cert_chain(self._cert, self._key)
        self._stamp = stamp
        log.info("webhook serving certificate loaded", extra={"path": str(self._cert)})


async def keep_current(certificates: Certificates, interval: float, stop: asyncio.Event) -> None:
    """Refresh every ``interval`` seconds until ``stop``; a failed refresh is logged and retried."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):
                await stop.wait()
        if stop.is_set():
            return
        try:
            await certificates.refresh()
        except Exception:
            log.exception("refreshing the webhook certificate failed; serving the current one")
