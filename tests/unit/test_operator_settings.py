"""Settings come from KAITO_* variables (and KUBECONFIG); `kaito run` flags override them."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from kaito.run_cli import register
from kaito.settings import Settings
from kaito_operator.presets.catalog import DEFAULT_REGISTRY


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAITO_METRICS_PORT", "KAITO_HEALTH_PORT", "KAITO_CONCURRENCY", "KAITO_IMAGE_REGISTRY"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.metrics_port, settings.health_port, settings.concurrency) == (8080, 8081, 5)
    assert settings.image_registry == DEFAULT_REGISTRY


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KAITO_METRICS_PORT": "9090",
        "KAITO_HEALTH_PORT": "9091",
        "KAITO_CONCURRENCY": "12",
        "KAITO_QPS": "20",
        "KAITO_BURST": "40",
        "KAITO_IMAGE_REGISTRY": "myacr.azurecr.io/kaito",
        "KAITO_LOG_LEVEL": "DEBUG",
        "KUBECONFIG": "/tmp/kc",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.metrics_port == 9090 and settings.health_port == 9091
    assert (settings.concurrency, settings.qps, settings.burst) == (12, 20.0, 40)
    assert settings.image_registry == "myacr.azurecr.io/kaito"
    assert settings.log_level == "DEBUG"
    assert settings.kubeconfig == "/tmp/kc"


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="concurrency"):
        Settings()


def test_lease_timings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAITO_LEADER_ELECTION_LEASE_DURATION", "8")
    monkeypatch.setenv("KAITO_LEADER_ELECTION_RENEW_DEADLINE", "5")
    monkeypatch.setenv("KAITO_LEADER_ELECTION_RETRY_PERIOD", "0.5")
    settings = Settings()
    assert (
        settings.leader_election_lease_duration,
        settings.leader_election_renew_deadline,
        settings.leader_election_retry_period,
    ) == (8, 5.0, 0.5)


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "named"),
    [
        ("10", "10", "2", "RENEW_DEADLINE"),  # the leader must give up before a standby takes over
        ("10", "12", "2", "RENEW_DEADLINE"),
        ("15", "2", "2", "RETRY_PERIOD"),  # at least one renewal within the deadline
    ],
)
def test_lease_timings_that_do_not_nest_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, lease: str, renew: str, retry: str, named: str
) -> None:
    monkeypatch.setenv("KAITO_LEADER_ELECTION_LEASE_DURATION", lease)
    monkeypatch.setenv("KAITO_LEADER_ELECTION_RENEW_DEADLINE", renew)
    monkeypatch.setenv("KAITO_LEADER_ELECTION_RETRY_PERIOD", retry)
    with pytest.raises(ValueError, match=f"KAITO_LEADER_ELECTION_{named}"):
        Settings()


def test_run_flags() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub, lambda module, function: lambda args: 0)
    args = parser.parse_args(["run", "--metrics-port", "0", "--concurrency", "3", "--kubeconfig", "/k"])
    assert (args.metrics_port, args.concurrency, args.kubeconfig, args.health_port) == (0, 3, "/k", None)


async def test_a_failing_controller_factory_closes_what_was_opened() -> None:
    from kaito.operator import OperatorContext, build_operator

    closed: list[str] = []

    class ApiClient:
        async def close(self) -> None:
            closed.append("api client")

    def opens_something(context: OperatorContext) -> Any:
        async def close() -> None:
            closed.append("sdk client")

        context.on_close(close)
        return context.manager.controller("first", object())  # type: ignore[arg-type]

    def fails(context: OperatorContext) -> Any:
        raise RuntimeError("AZURE_CLIENT_ID is not set")

    with pytest.raises(RuntimeError, match="AZURE_CLIENT_ID"):
        await build_operator(Settings(), api_client=ApiClient(), controllers=[opens_something, fails])
    assert closed == ["sdk client"]  # a client passed in stays the caller's to close
