"""The operator's configuration, read from the environment (prefix ``KAITO_``) by pydantic-settings.

Build a fresh ``Settings()`` where it is needed (the composition root); nothing reads it at import
time, so tests set variables with ``monkeypatch.setenv`` or pass keyword arguments.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from kaito_operator.presets.catalog import DEFAULT_REGISTRY


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAITO_", extra="ignore")

    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics (0: any free port).")
    health_port: int = Field(default=8081, ge=0, le=65535, description="Port of /healthz and /readyz.")
    bind_address: str = Field(default="0.0.0.0", description="Address the HTTP endpoints listen on.")
    concurrency: int = Field(default=5, ge=1, description="Reconciles run in parallel per controller.")
    qps: float = Field(
        default=0.0,
        ge=0,
        description="API requests per second on average (0: unlimited, the default: the API server's priority "
        "and fairness limits the operator, whose requests in flight are bounded by its workers; see "
        "docs/performance.md). Set it to cap the operator below what its flow schema allows.",
    )
    burst: int = Field(default=100, ge=1, description="API requests allowed in a burst above the QPS (with QPS > 0).")
    request_timeout: float = Field(default=30.0, gt=0, description="Time limit of one API request, seconds.")
    watch_timeout: int = Field(default=300, ge=10, description="Server-side watch timeout, seconds (randomised ×1-2).")
    resync_period: float = Field(default=600.0, ge=0, description="Re-deliver all cached objects every N seconds.")
    reconcile_timeout: float = Field(default=120.0, gt=0, description="Time limit of one reconcile, seconds.")
    shutdown_grace: float = Field(default=30.0, ge=0, description="Time reconciles in flight get to finish on stop.")
    refused_write_retry: float = Field(
        default=300.0,
        gt=0,
        description="Seconds before a write the API server refused (403 Forbidden, 422 Invalid) is tried again; "
        "the refusal is a condition on the Workspace meanwhile, and any change to the Workspace retries at once.",
    )
    image_registry: str = Field(default=DEFAULT_REGISTRY, description="Registry of the public preset images.")
    provisioner_enabled: bool = Field(
        default=True,
        description="Run the embedded GPU provisioner (Machine → AKS agent pool). Turn off to use another "
        "Karpenter-compatible provisioner for the Machines.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    leader_elect: bool = Field(default=False, description="Run controllers only while holding a Lease.")
    leader_election_namespace: str = Field(default="default", description="Namespace of the leader Lease.")
    leader_election_id: str = Field(default="kaito-operator-leader", description="Name of the leader Lease.")
    leader_election_lease_duration: int = Field(
        default=15,
        ge=1,
        description="Seconds a standby waits, after it last saw the Lease renewed, before it takes over "
        "(the Lease's leaseDurationSeconds). A failover after a crash takes about this long.",
    )
    leader_election_renew_deadline: float = Field(
        default=10.0,
        gt=0,
        description="Seconds the leader keeps trying to renew before it stops acting; below the lease duration.",
    )
    leader_election_retry_period: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between renewals (leader) and between attempts to take the Lease (standby); "
        "below the renew deadline.",
    )
    max_workspace_count: int = Field(
        default=10, ge=1, description="The most nodes (resource.count) one Workspace may ask for."
    )
    webhook_enabled: bool = Field(default=True, description="Serve the validating admission webhook (TLS).")
    webhook_port: int = Field(default=9443, ge=0, le=65535, description="Port of the webhook (0: any free port).")
    webhook_cert_source: Literal["self-signed", "files"] = Field(
        default="self-signed",
        description="self-signed: the operator keeps its own CA and certificate in a Secret and writes the CA "
        "bundle into the webhook configuration. files: read tls.crt/tls.key from webhook_cert_dir "
        "(cert-manager), reloading them when they change.",
    )
    webhook_cert_dir: str = Field(
        default="/tmp/k8s-webhook-server/serving-certs", description="Folder of tls.crt and tls.key (files source)."
    )
    webhook_namespace: str = Field(default="default", description="Namespace of the webhook's Service and Secret.")
    webhook_service_name: str = Field(default="kaito-webhook", description="Service the API server calls.")
    webhook_secret_name: str = Field(default="kaito-webhook-cert", description="Secret holding the certificates.")
    webhook_configuration_name: str = Field(
        default="validation.workspace.kaito.sh",
        description="ValidatingWebhookConfiguration whose caBundle the operator keeps (self-signed source).",
    )
    webhook_url: str | None = Field(
        default=None,
        description="Register the webhook configuration by this URL (e.g. https://127.0.0.1:9443/validate/"
        "workspace.kaito.sh in the sandbox) and keep it registered; unset: the chart registers it through its "
        "Service and the operator only writes the CA bundle.",
    )
    webhook_namespace_selector: dict[str, str] | None = Field(
        default=None, description="With webhook_url: only Workspaces in namespaces with these labels are checked."
    )
    webhook_cert_check_interval: float = Field(
        default=60.0, gt=0, description="How often the certificate and the CA bundle are checked, seconds."
    )
    kubeconfig: str | None = Field(
        default=None,
        validation_alias="KUBECONFIG",
        description="Kubeconfig file (env KUBECONFIG); unset: the in-cluster service account.",
    )

    @model_validator(mode="after")
    def _lease_timings_nest(self) -> Self:
        # As client-go requires: the leader gives up before a standby may take over, and renews
        # more than once within its deadline.
        if not self.leader_election_renew_deadline < self.leader_election_lease_duration:
            raise ValueError(
                f"KAITO_LEADER_ELECTION_RENEW_DEADLINE ({self.leader_election_renew_deadline:g}) must be "
                f"below KAITO_LEADER_ELECTION_LEASE_DURATION ({self.leader_election_lease_duration})"
            )
        if not self.leader_election_retry_period < self.leader_election_renew_deadline:
            raise ValueError(
                f"KAITO_LEADER_ELECTION_RETRY_PERIOD ({self.leader_election_retry_period:g}) must be "
                f"below KAITO_LEADER_ELECTION_RENEW_DEADLINE ({self.leader_election_renew_deadline:g})"
            )
        return self
