"""A rotated CA is published in the webhook configuration before the new serving pair is loaded,
and a write conflict on the configuration is read again and retried at once (a scripted client)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest

from kaito_operator.runtime import ApiError, FakeClock, ResourceKind
from kaito_operator.runtime.kinds import SECRET
from kaito_operator.webhook import keeper
from kaito_operator.webhook.keeper import SecretCertificates

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class ScriptedApi:
    """One Secret and one registered webhook configuration; the first configuration write conflicts."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.secret: dict[str, Any] | None = None
        self.configuration: dict[str, Any] = {
            "metadata": {"name": "validation.workspace.kaito.sh", "resourceVersion": "1"},
            "webhooks": [{"name": "validation.workspace.kaito.sh", "clientConfig": {}}],
        }
        self.conflicts = 0

    async def get(self, kind: ResourceKind, name: str, namespace: str | None = None) -> dict[str, Any]:
        if kind == SECRET:
            if self.secret is None:
                raise ApiError(404, "NotFound", "no secret")
            return copy.deepcopy(self.secret)
        return copy.deepcopy(self.configuration)

    async def create(self, kind: ResourceKind, obj: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.secret = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "1"}}
        return copy.deepcopy(self.secret)

    async def replace(self, kind: ResourceKind, obj: dict[str, Any]) -> dict[str, Any]:
        if kind == SECRET:
            self.secret = copy.deepcopy(obj)
            return obj
        if self.conflicts:
            self.conflicts -= 1
            self.log.append("conflict")
            raise ApiError(409, "Conflict", "the object has been modified")
        self.configuration = copy.deepcopy(obj)
        self.log.append("publish")
        return obj


async def test_a_rotated_ca_is_trusted_before_its_pair_is_served_even_after_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []
    real_load = keeper._load_pair

    def load(context: Any, cert: bytes, key: bytes) -> None:
        log.append("load")
        real_load(context, cert, key)

    monkeypatch.setattr(keeper, "_load_pair", load)
    api = ScriptedApi(log)
    clock = FakeClock(START)
    certificates = SecretCertificates(
        api,  # type: ignore[arg-type]
        clock,
        namespace="kaito",
        secret_name="kaito-webhook-cert",
        hosts=["kaito-webhook.kaito.svc"],
        configuration_name="validation.workspace.kaito.sh",
    )
    await certificates.refresh()
    assert log == ["load", "publish"], "the first pair is served at once"
    first_bundle = certificates.ca_bundle

    log.clear()
    api.conflicts = 1
    clock.step(dt.timedelta(days=2500).total_seconds())  # past two thirds of the CA's life: a new CA
    await certificates.refresh()
    assert certificates.ca_bundle != first_bundle
    assert log == ["conflict", "publish", "load"], "published (retried at once) before the new pair is served"
