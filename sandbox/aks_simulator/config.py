"""What the simulator pretends to be (subscription, cluster, identity) and the faults it injects.

Faults are data: each names the requests it hits (method family, optionally one pool) and what to
answer instead, so tests and the ``/_admin/faults`` endpoint describe failures the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FaultTarget = Literal["PUT", "GET", "DELETE", "LIST", "OPERATION", "TOKEN"]
"""PUT/GET/DELETE of one pool, LIST of the collection, OPERATION (a GET of an async-operation
status URL) or TOKEN (the Entra ID token endpoint)."""

# Sizes that are not GPU SKUs but that AKS offers everywhere; the simulator accepts them by default so
# CPU Machines work too (vCPUs, memory GiB).
DEFAULT_CPU_SIZES: dict[str, tuple[int, int]] = {
    "Standard_D2s_v3": (2, 8),
    "Standard_D4s_v3": (4, 16),
    "Standard_D8s_v3": (8, 32),
    "Standard_D16s_v3": (16, 64),
    "Standard_D4s_v5": (4, 16),
    "Standard_D8s_v5": (8, 32),
    "Standard_D16s_v5": (16, 64),
    "Standard_D32s_v5": (32, 128),
    "Standard_E8s_v5": (8, 64),
    "Standard_DS2_v2": (2, 7),
}


class Fault(BaseModel):
    """One injected failure. ``times`` counts the requests it still hits (None: until cleared)."""

    model_config = ConfigDict(extra="forbid")

    target: FaultTarget
    status: int = Field(default=500, description="HTTP status of the error answer.")
    code: str = Field(default="InternalServerError", description="ARM error code (or AAD error for TOKEN).")
    message: str = Field(default="An internal error occurred (injected fault).")
    retry_after: float | None = Field(default=None, description="Seconds sent in a Retry-After header.")
    asynchronous: bool = Field(
        default=False,
        description="PUT/DELETE only: accept the request, then end its async operation Failed with "
        "code and message (how AKS reports allocation failures).",
    )
    delay_s: float = Field(default=0.0, ge=0, description="Answer this much later (to exercise client timeouts).")
    pool: str | None = Field(default=None, description="Only requests for this agent pool.")
    times: int | None = Field(default=1, ge=1)

    # --- the faults tests ask for most, with AKS's codes and wording ---------------------------
    @classmethod
    def throttle(cls, target: FaultTarget = "PUT", *, retry_after: float = 1, times: int | None = 1) -> Fault:
        return cls(
            target=target,
            status=429,
            code="TooManyRequests",
            message="The request is being throttled as the limit has been reached for operation type "
            "(injected fault). Please retry after the time given in the Retry-After header.",
            retry_after=retry_after,
            times=times,
        )

    @classmethod
    def server_error(cls, target: FaultTarget = "PUT", *, times: int | None = 1) -> Fault:
        return cls(target=target, times=times)

    @classmethod
    def quota_exceeded(
        cls, *, family: str = "standardNCADSA100v4Family", location: str = "eastus", times: int | None = None
    ) -> Fault:
        return cls(
            target="PUT",
            status=400,
            code="QuotaExceeded",
            message=(
                "Operation could not be completed as it results in exceeding approved "
                f"{family} Cores quota. Additional details - Deployment Model: Resource Manager, "
                f"Location: {location}, Current Limit: 0, Current Usage: 0, Additional Required: 24, "
                "(Minimum) New Limit Required: 24. Submit a request for Quota increase."
            ),
            times=times,
        )

    @classmethod
    def allocation_failed(cls, *, times: int | None = 1) -> Fault:
        return cls(
            target="PUT",
            asynchronous=True,
            code="AllocationFailed",
            message="Allocation failed. We do not have sufficient capacity for the requested VM size in "
            "this region (injected fault).",
            times=times,
        )


class SimulatorConfig(BaseModel):
    """The simulated subscription, cluster and Entra ID application, and the simulator's pacing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    subscription_id: str = "00000000-0000-0000-0000-000000000001"
    resource_group: str = "kaito-rg"
    cluster_name: str = "kaito-cluster"
    location: str = "eastus"

    tenant_id: str = "00000000-0000-0000-0000-0000000000aa"
    client_id: str = "00000000-0000-0000-0000-0000000000cc"
    federated_token: str = "simulated-service-account-token"
    """The only ``client_assertion`` the token endpoint accepts: the content of the
    service-account token file the operator is given (AZURE_FEDERATED_TOKEN_FILE)."""
    token_lifetime_s: int = 3600

    provisioning_delay_s: float = 1.0
    """How long a create stays InProgress before the node joins and the pool succeeds."""
    deletion_delay_s: float = 0.5
    retry_after_s: int = 1
    """Retry-After sent with 201/202 answers and InProgress operation polls."""
    list_page_size: int = 50

    allowed_vm_sizes: list[str] | None = None
    """VM sizes this subscription may use in the location; None: every size of the simulator's table (sizes.py) plus
    a few common CPU sizes. Anything else gets AKS's 400 "The VM size of X is not allowed"."""

    kubeconfig: Path | None = None
    """When set, a succeeded pool registers its Node in this cluster (and deleting the pool
    removes it), as AKS would."""
    node_resource_group: str | None = None
    """Default: MC_<resource group>_<cluster>_<location>, as AKS names it."""

    host: str = "127.0.0.1"
    port: int = 0
    """0: pick a free port."""
    tls_dir: Path | None = None
    """Where the CA and server certificate go; default: a temporary directory."""

    faults: list[Fault] = Field(default_factory=list)

    @property
    def effective_node_resource_group(self) -> str:
        return self.node_resource_group or (f"MC_{self.resource_group}_{self.cluster_name}_{self.location}")
