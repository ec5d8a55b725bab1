"""The kinds of cloud failure the Machine lifecycle branches on, as exception classes.

Cloud adapters translate their SDK's errors into these once, at the edge (see ``aks.py``); the
lifecycle never looks at status codes or message text. Each class says whether retrying the same
request can help (``permanent``) and carries the cloud's own code and message, so a condition can
show the user what Azure said.
"""

from __future__ import annotations

import re
from typing import Final

_VOLATILE: Final = re.compile(
    r"\s*(?:"
    r"(?:Trace ID|Correlation ID):\s*[0-9A-Fa-f-]+"
    r"|Timestamp:\s*\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?"
    r"|[\"']?(?:trace_id|correlation_id|timestamp)[\"']?\s*:\s*[\"'][^\"']*[\"'],?"
    r")"
)
"""The parts of an Entra ID refusal that change with every request."""


def without_volatile_parts(message: str) -> str:
    """``message`` without Entra ID's per-request Trace ID, Correlation ID and Timestamp."""
    return _VOLATILE.sub("", message).strip()


class CloudError(Exception):
    """Base of every failure a cloud provider reports.

    ``reason`` is a CamelCase word fit for a condition reason; ``code`` the cloud's own error code
    (e.g. ARM's ``QuotaExceeded``), when it gave one; ``message`` what the cloud said.
    """

    reason: str = "CloudError"
    permanent: bool = False

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry_after = retry_after
        """Seconds the cloud asked us to wait before trying again (429/503 Retry-After), if any."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class NotFound(CloudError):
    """The instance (agent pool) does not exist, in a cluster that does (AKS's own ``NotFound``).
    Deleting a missing instance raises this. A 404 that may mean a missing resource group, cluster
    or subscription is a :class:`ConfigurationError` instead."""

    reason = "NotFound"


class OperationInProgress(CloudError):
    """Another operation on the same instance is running (ARM 409 ``OperationNotAllowed``).

    For a create this usually means our own earlier create is still going (e.g. we restarted and
    lost its continuation token): wait for it rather than failing.
    """

    reason = "OperationInProgress"


class Transient(CloudError):
    """Throttling (429), a server error (5xx), a timeout or a dropped connection: retry later."""

    reason = "Transient"


class ConfigurationError(CloudError):
    """The operator's Azure settings point nowhere or our identity may not act there: the
    subscription, resource group or managed cluster does not exist (ARM 404 ``SubscriptionNotFound``,
    ``ResourceGroupNotFound``, ``ResourceNotFound`` / ``ParentResourceNotFound`` for the cluster), or
    the identity has no rights on it (403 ``AuthorizationFailed``).

    Never "the pool is gone": such a 404 says nothing about the pool, so a caller that wants a pool
    deleted must keep waiting (and keep its finalizer). Retrying soon does not help, fixing the
    settings or the role assignment does, so callers retry slowly rather than never.
    """

    reason = "ConfigurationError"


class Unauthorized(ConfigurationError):
    """The cloud refused our identity (no token, a token it does not accept, a token file that is
    gone, or no permission): a configuration error of the identity."""

    reason = "Unauthorized"


class InsufficientCapacity(CloudError):
    """The region has no capacity for the VM size right now (``AllocationFailed`` and kin).

    Permanent for this request: the same PUT will usually fail the same way.
    """

    reason = "InsufficientCapacity"
    permanent = True


class QuotaExceeded(CloudError):
    """The subscription's vCPU quota for the VM family is exhausted."""

    reason = "QuotaExceeded"
    permanent = True


class SkuNotAllowed(CloudError):
    """The VM size is not offered to this subscription in this location."""

    reason = "SkuNotAllowed"
    permanent = True


class InvalidParameters(CloudError):
    """The request itself is wrong (bad name, unknown VM size, count out of range, ...)."""

    reason = "InvalidParameters"
    permanent = True


class UnreadableOperation(InvalidParameters):
    """A continuation token the provider cannot read (one written by an older SDK before an upgrade,
    or an edited annotation). Nothing is wrong with the instance: callers forget the operation and
    look at the instance afresh instead of failing the request for good."""

    reason = "UnreadableOperation"


class OperationFailed(CloudError):
    """A long-running operation ended ``Failed`` or ``Canceled`` for a reason none of the classes
    above names. Not permanent: sending the same request again is how AKS repairs a failed pool,
    so callers retry with backoff."""

    reason = "OperationFailed"
