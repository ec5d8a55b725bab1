"""``kaito run``: the operator process, and its one composition root.

``build_operator`` builds everything (API client, rate-limited REST client, metrics registry,
Manager with its shared informers, Event recorders, controllers) and hands each part its
dependencies; nothing is registered at import time. Controllers come from **controller
factories**: functions ``(OperatorContext) -> Controller``. ``DEFAULT_CONTROLLERS`` holds the
Workspace controller's; ``controllers_from_settings`` adds the GPU provisioner's
(``gpu_provisioner.setup.ProvisionerFactory``) unless ``KAITO_PROVISIONER_ENABLED=false``. All of
them share the Manager (and so its Machine and Node informers), the client and the metrics.

The process serves /healthz and /readyz (KAITO_HEALTH_PORT; factories add readiness checks through
``OperatorContext.add_readiness_check``), /metrics (KAITO_METRICS_PORT), and the validating admission
webhook over TLS (KAITO_WEBHOOK_PORT; every replica serves it, leader or not, since the rules need no
controller); it logs JSON, and on SIGTERM/SIGINT lets reconciles in flight finish before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import sys
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pythonjsonlogger.json import JsonFormatter

from gpu_provisioner.setup import ProvisionerFactory
from kaito.settings import Settings
from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock, RealClock
from kaito_operator.runtime.controller import Controller
from kaito_operator.runtime.events import EventRecorder
from kaito_operator.runtime.leader import LeaderElector
from kaito_operator.runtime.manager import Manager
from kaito_operator.runtime.metrics import RuntimeMetrics
from kaito_operator.webhook.keeper import (
    Certificates,
    FileCertificates,
    SecretCertificates,
    keep_current,
    service_hosts,
)
from kaito_operator.webhook.server import WorkspaceAdmission, admission_app, webhook_configuration
from kaito_operator.workspace.controller import workspace_controller
from kaito_operator.workspace.validation import Limits
from kaito_operator.workspace.workload import RenderOptions
from model_images.runtime.command import runtime_container_command

log = logging.getLogger(__name__)


@dataclass
class OperatorContext:
    """What a controller factory may use: all shared, all built once by ``build_operator``."""

    manager: Manager
    client: KubeClient
    settings: Settings
    metrics: RuntimeMetrics
    clock: Clock

    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    readiness_checks: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    def recorder(self, component: str) -> EventRecorder:
        """An Event recorder reporting as ``component`` (e.g. "kaito-workspace-controller")."""
        return EventRecorder(self.client, self.clock, component=component)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Run ``closer`` when the operator is closed, after the manager stopped (e.g. close a
        cloud SDK client a controller factory opened). Closers run in reverse order."""
        self.closers.append(closer)

    def add_readiness_check(self, name: str, check: Callable[[], str | None]) -> None:
        """Make /readyz answer 503 while ``check()`` returns a problem (a sentence), e.g. a cloud
        configuration a controller found wrong. Checks must be cheap: they run on every probe."""
        self.readiness_checks[name] = check


ControllerFactory = Callable[[OperatorContext], Controller]


def render_options(settings: Settings) -> RenderOptions:
    """How the Workspace controller renders workloads: the preset registry, and the project
    runtime's container command (owned by model_images) for ``kaito.sh/runtime: transformers``."""
    return RenderOptions(registry=settings.image_registry, runtime_command=runtime_container_command)


def validation_limits(settings: Settings) -> Limits:
    """What the admission rules depend on; the webhook and the reconciler get the same."""
    return Limits(max_count=settings.max_workspace_count)


def workspace_controller_factory(context: OperatorContext) -> Controller:
    return workspace_controller(
        context.manager,
        recorder=context.recorder("kaito-workspace-controller"),
        options=render_options(context.settings),
        limits=validation_limits(context.settings),
        concurrency=context.settings.concurrency,
        reconcile_timeout=context.settings.reconcile_timeout,
        refused_retry=context.settings.refused_write_retry,
    )


DEFAULT_CONTROLLERS: tuple[ControllerFactory, ...] = (workspace_controller_factory,)
"""The controllers every ``kaito run`` starts; see ``controllers_from_settings`` for the provisioner."""


def controllers_from_settings(settings: Settings) -> list[ControllerFactory]:
    """The Workspace controller, and the GPU provisioner unless another provisioner serves Machines."""
    controllers: list[ControllerFactory] = list(DEFAULT_CONTROLLERS)
    if settings.provisioner_enabled:
        controllers.append(ProvisionerFactory())  # Azure settings come from the environment
    return controllers


@dataclass
class Operator:
    """A built operator: run it with ``run(stop)``, then ``aclose()``."""

    context: OperatorContext
    controllers: list[Controller]
    api_client: Any
    owns_api_client: bool
    health_port: int | None = None
    metrics_port: int | None = None
    webhook_port: int | None = None
    certificates: Certificates | None = None
    _runners: list[web.AppRunner] = field(default_factory=list)

    @property
    def manager(self) -> Manager:
        return self.context.manager

    @property
    def metrics(self) -> RuntimeMetrics:
        return self.context.metrics

    async def start_http(self) -> None:
        """Serve /healthz, /readyz and /metrics (one server when both ports are equal and fixed)."""
        settings = self.context.settings
        health = web.Application()
        health.router.add_get("/healthz", self._healthz)
        health.router.add_get("/readyz", self._readyz)
        metrics = health if settings.metrics_port == settings.health_port != 0 else web.Application()
        metrics.router.add_get("/metrics", self._metrics)
        self.health_port = await self._serve(health, settings.health_port)
        self.metrics_port = self.health_port if metrics is health else await self._serve(metrics, settings.metrics_port)

    def _certificates(self) -> Certificates:
        settings = self.context.settings
        if settings.webhook_cert_source == "files":
            return FileCertificates(settings.webhook_cert_dir)
        return SecretCertificates(
            self.context.client,
            self.context.clock,
            namespace=settings.webhook_namespace,
            secret_name=settings.webhook_secret_name,
            hosts=service_hosts(settings.webhook_service_name, settings.webhook_namespace),
            configuration_name=settings.webhook_configuration_name,
            registration=self._registration(),
        )

    def _registration(self) -> dict[str, Any] | None:
        """With KAITO_WEBHOOK_URL (the sandbox), the operator registers itself by that URL."""
        settings = self.context.settings
        if not settings.webhook_url:
            return None
        selector = settings.webhook_namespace_selector
        return webhook_configuration(
            settings.webhook_configuration_name,
            {"url": settings.webhook_url},
            namespace_selector={"matchLabels": selector} if selector else None,
        )

    async def start_webhook(self) -> Certificates:
        """Get a certificate (raises when none can be had), then serve the admission webhook over TLS."""
        settings = self.context.settings
        certificates = self._certificates()
        await certificates.refresh(publish=False)
        admission = WorkspaceAdmission(validation_limits(settings), render_options(settings), self.context.client)
        self.webhook_port = await self._serve(admission_app(admission), settings.webhook_port, certificates.ssl_context)
        self.certificates = certificates
        await certificates.refresh()  # now that it answers, let the API server call it
        return certificates

    async def _serve(self, app: web.Application, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.context.settings.bind_address, port, ssl_context=ssl_context)
        await site.start()
        self._runners.append(runner)
        bound: int = runner.addresses[-1][1]  # the real port when ``port`` was 0
        return bound

    async def _healthz(self, request: web.Request) -> web.Response:
        failure = self.manager.failure
        return web.Response(status=500, text=f"failed: {failure}") if failure else web.Response(text="ok")

    def readiness_problems(self, exclude: Collection[str] = ()) -> list[str]:
        """Why the operator is not ready (empty when it is); ``exclude`` names checks to leave out."""
        problems = [] if self.manager.ready else ["not ready: caches not synced yet, or the manager stopped"]
        for name, check in self.context.readiness_checks.items():
            problem = None if name in exclude else check()
            if problem:
                problems.append(f"{name}: {problem}")
        return problems

    async def _readyz(self, request: web.Request) -> web.Response:
        # ``?exclude=NAME`` (repeatable), as the API server's own /readyz takes it: the chart's probe
        # leaves out the Azure check so a wrong Azure setting does not take the admission webhook's
        # endpoints away (which would refuse every Workspace write, deletions included).
        problems = self.readiness_problems(exclude=request.query.getall("exclude", []))
        return web.Response(status=503, text="\n".join(problems)) if problems else web.Response(text="ok")

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def run(self, stop: asyncio.Event, *, serve_http: bool = True) -> int:
        """Run until ``stop`` is set (or a background task crashes); returns the exit code."""
        keeper: asyncio.Task[None] | None = None
        try:
            if serve_http:
                await self.start_http()  # inside: a port in use must not leave the other one bound
                if self.context.settings.webhook_enabled:
                    certificates = await self.start_webhook()
                    keeper = asyncio.create_task(
                        keep_current(certificates, self.context.settings.webhook_cert_check_interval, stop),
                        name="webhook-certificates",
                    )
            return await self.manager.run(stop)
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            for runner in self._runners:
                await runner.cleanup()
            self._runners.clear()

    async def aclose(self) -> None:
        """Run the factories' closers (newest first), then close the API client if we made it."""
        for closer in reversed(self.context.closers):
            try:
                await closer()
            except Exception:
                log.exception("closing %s failed", getattr(closer, "__qualname__", closer))
        self.context.closers.clear()
        if self.owns_api_client:
            await self.api_client.close()


async def api_client_from_settings(settings: Settings) -> Any:
    """KUBECONFIG when set, else the in-cluster service account (token re-read as it rotates)."""
    configuration = k8s_client.Configuration()
    if settings.kubeconfig:
        await k8s_config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    else:
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return k8s_client.ApiClient(configuration)


async def build_operator(
    settings: Settings,
    *,
    api_client: Any = None,
    controllers: Sequence[ControllerFactory] = DEFAULT_CONTROLLERS,
    clock: Clock | None = None,
    metrics: RuntimeMetrics | None = None,
) -> Operator:
    """The composition root. ``api_client``: use this kubernetes-asyncio ApiClient (tests) instead
    of building one from the settings; ``controllers``: the factories of the controllers to run."""
    owns_api_client = api_client is None
    if api_client is None:
        api_client = await api_client_from_settings(settings)
    clock = clock or RealClock()
    metrics = metrics or RuntimeMetrics()
    kube = KubeClient(
        api_client,
        clock=clock,
        metrics=metrics,
        qps=settings.qps,
        burst=settings.burst,
        timeout=settings.request_timeout,
    )
    elector = None
    if settings.leader_elect:
        elector = LeaderElector(
            kube,
            clock,
            namespace=settings.leader_election_namespace,
            name=settings.leader_election_id,
            identity=f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}",
            lease_duration=settings.leader_election_lease_duration,
            renew_deadline=settings.leader_election_renew_deadline,
            retry_period=settings.leader_election_retry_period,
        )
    manager = Manager(
        kube,
        clock=clock,
        metrics=metrics,
        resync_period=settings.resync_period,
        watch_timeout=settings.watch_timeout,
        shutdown_grace=settings.shutdown_grace,
        default_concurrency=settings.concurrency,
        leader_elector=elector,
    )
    context = OperatorContext(manager=manager, client=kube, settings=settings, metrics=metrics, clock=clock)
    operator = Operator(context=context, controllers=[], api_client=api_client, owns_api_client=owns_api_client)
    try:
        operator.controllers.extend(factory(context) for factory in controllers)
    except BaseException:
        await operator.aclose()  # what the factories opened so far, and our API client
        raise
    return operator


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


async def serve(settings: Settings, controllers: Sequence[ControllerFactory]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        operator = await build_operator(settings, controllers=controllers)
    except (k8s_config.ConfigException, OSError) as error:
        log.error("cannot reach the cluster: %s (set KUBECONFIG, or run in a pod)", error)
        return 2
    try:
        log.info(
            "kaito operator starting",
            extra={"controllers": [c.name for c in operator.controllers], "qps": settings.qps},
        )
        return await operator.run(stop)
    finally:
        await operator.aclose()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(args: argparse.Namespace) -> int:
    overrides = {
        name: value
        for name in ("metrics_port", "health_port", "concurrency")
        if (value := getattr(args, name, None)) is not None
    }
    settings = Settings(**overrides)
    if getattr(args, "kubeconfig", None):
        settings = settings.model_copy(update={"kubeconfig": args.kubeconfig})
    configure_logging(settings.log_level)
    return asyncio.run(serve(settings, controllers_from_settings(settings)))
