"""The provisioner's configuration, read from the environment with gpu-provisioner's variable names.

Azure placement (gpu-provisioner's names): ARM_SUBSCRIPTION_ID, ARM_RESOURCE_GROUP (the cluster's
resource group), AZURE_CLUSTER_NAME, LOCATION. Workload identity (set by the AKS workload-identity
webhook; azure-identity's names): AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE,
AZURE_AUTHORITY_HOST. Ours, for clouds and sandboxes other than public Azure: ARM_ENDPOINT (the ARM
base URL), AZURE_CA_BUNDLE (a PEM file trusted for both ARM and the authority), ARM_API_VERSION.
Tuning knobs carry the PROVISIONER_ prefix.

Missing values are not a validation error here: :meth:`AzureSettings.missing` lists them so the
operator can say, once and plainly, what to set, instead of crashing in a loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

IDENTITY_SETUP_HINT = (
    "Run scripts/setup-identity.sh -g <resource group> -c <cluster> (it creates the managed identity, "
    "grants it a custom role on the cluster limited to reading it and writing its agent pools and one on "
    "the subscription that only reads AKS operation status, and federates it with the operator's "
    "ServiceAccount), then install or upgrade the chart helm/kaito with the values "
    "it prints: workloadIdentity.clientId, workloadIdentity.tenantId and provisioner.azure.subscriptionId, "
    ".resourceGroup, .clusterName, .location. The AKS workload-identity webhook then injects AZURE_CLIENT_ID, "
    "AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and AZURE_AUTHORITY_HOST. See docs/install-aks.md."
)


class AzureSettings(BaseSettings):
    """Where the agent pools live and who we are when we ask for them."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    subscription_id: str | None = Field(default=None, validation_alias="ARM_SUBSCRIPTION_ID")
    resource_group: str | None = Field(
        default=None,
        validation_alias="ARM_RESOURCE_GROUP",
        description="The managed cluster's resource group (not the MC_ node resource group).",
    )
    cluster_name: str | None = Field(default=None, validation_alias="AZURE_CLUSTER_NAME")
    location: str | None = Field(default=None, validation_alias="LOCATION")

    client_id: str | None = Field(default=None, validation_alias="AZURE_CLIENT_ID")
    tenant_id: str | None = Field(default=None, validation_alias="AZURE_TENANT_ID")
    federated_token_file: Path | None = Field(default=None, validation_alias="AZURE_FEDERATED_TOKEN_FILE")
    authority_host: str = Field(
        default="https://login.microsoftonline.com",
        validation_alias="AZURE_AUTHORITY_HOST",
        description="Entra ID authority; azure-identity insists on https.",
    )

    arm_endpoint: str = Field(
        default="https://management.azure.com",
        validation_alias="ARM_ENDPOINT",
        description="ARM base URL: a sovereign cloud, or the sandbox's simulator.",
    )
    ca_bundle: Path | None = Field(
        default=None,
        validation_alias="AZURE_CA_BUNDLE",
        description="PEM file to trust for ARM and the authority instead of the system store (sandbox).",
    )
    arm_scope: str = Field(
        default="https://management.azure.com/.default",
        validation_alias="ARM_SCOPE",
        description="Token scope for ARM calls; sovereign clouds use their own.",
    )
    api_version: str | None = Field(
        default=None,
        validation_alias="ARM_API_VERSION",
        description="Pin the agentPools api-version (default: the SDK's).",
    )

    def missing(self) -> list[str]:
        """Environment variables that must be set before the provisioner can call Azure."""
        required = {
            "ARM_SUBSCRIPTION_ID": self.subscription_id,
            "ARM_RESOURCE_GROUP": self.resource_group,
            "AZURE_CLUSTER_NAME": self.cluster_name,
            "AZURE_CLIENT_ID": self.client_id,
            "AZURE_TENANT_ID": self.tenant_id,
            "AZURE_FEDERATED_TOKEN_FILE": self.federated_token_file,
        }
        return [name for name, value in required.items() if not value]

    def problems(self) -> list[str]:
        """Everything wrong with the configuration, each as a sentence a user can act on."""
        problems = []
        missing = self.missing()
        if missing:
            problems.append(f"missing environment variables: {', '.join(missing)}")
        if self.federated_token_file is not None and not self.federated_token_file.is_file():
            problems.append(
                f"AZURE_FEDERATED_TOKEN_FILE={self.federated_token_file} does not exist (is the pod labelled "
                "azure.workload.identity/use=true and its ServiceAccount annotated with the client id?)"
            )
        if not self.authority_host.startswith("https://"):
            problems.append(f"AZURE_AUTHORITY_HOST={self.authority_host} must be an https:// URL")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            problems.append(f"AZURE_CA_BUNDLE={self.ca_bundle} does not exist")
        return problems

    def describe_problems(self) -> str | None:
        """One message for the log and for Machine conditions, or None when all is well."""
        problems = self.problems()
        if not problems:
            return None
        return "GPU provisioner is not configured: " + "; ".join(problems) + ". " + IDENTITY_SETUP_HINT


class ProvisionerSettings(BaseSettings):
    """How the Machine controller and the garbage collector pace themselves."""

    model_config = SettingsConfigDict(env_prefix="PROVISIONER_", extra="ignore")

    enabled: bool = Field(default=True, description="Run the embedded provisioner at all.")
    poll_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How soon to look again at a running Azure operation or a joining node.",
    )
    arm_polling_interval_s: float = Field(
        default=30.0, gt=0, description="The SDK poller's own interval (only used when it waits itself)."
    )
    request_timeout_s: float = Field(default=30.0, gt=0, description="Upper bound on any one Azure call.")
    auth_retry_interval_s: float = Field(
        default=60.0, gt=0, description="How soon to retry after Azure refused our identity."
    )
    transient_retry_s: float = Field(
        default=5.0, gt=0, description="Retry delay after a transient error that named no Retry-After."
    )
    max_transient_retry_s: float = Field(default=120.0, gt=0)
    gc_interval_s: float = Field(default=120.0, gt=0, description="How often the garbage collector sweeps.")
    gc_grace_period_s: float = Field(
        default=30.0, ge=0, description="Agent pools younger than this are never collected."
    )
    machine_selector: str | None = Field(
        default=None,
        description="Only provision Machines (and collect pools) whose labels match, e.g. "
        "'kaito.sh/workspacenamespace=team-a' (comma-separated key=value pairs): lets several "
        "provisioners share a cluster, and tests isolate themselves.",
    )
    launched_cache_ttl_s: float = Field(
        default=600.0,
        gt=0,
        description="How long to remember a started create when its status write got lost.",
    )
    launch_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="A Machine whose create Azure has not accepted this long after the Machine was made "
        "(transient errors, failed operations) is deleted (karpenter: 5 min).",
    )
    registration_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="A Machine whose node has not registered this long after MachineLaunched became True "
        "is deleted with its pool (karpenter: 15 min).",
    )
    launch_recheck_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="After a permanent launch failure (quota, VM size not allowed, no capacity), send the "
        "same create again at most this often, so a raised quota recovers without deleting anything.",
    )
    configuration_recheck_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="How often the start-up check of the Azure configuration (cluster reachable, identity "
        "allowed) runs again while it fails, and at most how often once it passed (x10).",
    )
    drain_timeout_s: float = Field(
        default=300.0,
        ge=0,
        description="How long to keep evicting a node's pods (PodDisruptionBudgets may refuse) before the "
        "node is deleted anyway.",
    )
    gc_max_deletions_per_sweep: int = Field(
        default=10,
        ge=1,
        description="At most this many agent pools deleted by one garbage-collection sweep.",
    )


def parse_selector(selector: str | None) -> dict[str, str]:
    """``"a=b,c=d"`` as a dict (an empty or missing selector matches everything)."""
    pairs: dict[str, str] = {}
    for part in (selector or "").split(","):
        if part.strip():
            key, _, value = part.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
