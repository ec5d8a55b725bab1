"""The AKS cloud provider: instances are one-node agent pools, managed through ARM with the
azure-mgmt-containerservice aio client and a workload-identity credential.

This is the adapter edge: every Azure SDK exception is translated here, once, into the failure
kinds of ``errors.py`` (by HTTP status and ARM error code), and every call is bounded by a timeout.
Long-running operations are never waited out: ``create``/``delete`` send the initial request and
return the poller's continuation token; ``poll`` rebuilds the poller from it and looks once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import aiohttp
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.polling import AsyncLROPoller
from azure.identity.aio import WorkloadIdentityCredential
from azure.mgmt.containerservice.aio import ContainerServiceClient
from azure.mgmt.containerservice.models import AgentPool, AgentPoolManagedClusterAgentPoolProfileProperties
from azure.mgmt.core.polling.async_arm_polling import AsyncARMPolling

from gpu_provisioner import errors
from gpu_provisioner.cloudprovider import Instance, InstanceSpec, Operation, OperationProgress
from gpu_provisioner.settings import IDENTITY_SETUP_HINT, AzureSettings, ProvisionerSettings

log = logging.getLogger(__name__)
T = TypeVar("T")

# ARM error codes, by the failure kind they mean. AKS passes Compute's allocation codes through in a
# failed operation's error.
_QUOTA_CODES = frozenset({"QuotaExceeded", "ErrCode_InsufficientVCPUQuota", "InsufficientVCPUQuota"})
_CAPACITY_CODES = frozenset(
    {
        "AllocationFailed",
        "ZonalAllocationFailed",
        "OverconstrainedAllocationRequest",
        "OverconstrainedZonalAllocationRequest",
        "ErrCode_InsufficientCapacity",
    }
)
_SKU_CODES = frozenset({"SkuNotAvailable", "VMSizeNotSupported", "ErrCode_VMSizeNotSupported"})
_IN_PROGRESS_CODES = frozenset({"OperationNotAllowed", "AnotherOperationInProgress", "OperationPreempted"})
_INVALID_CODES = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidRequestContent",
        "InvalidTagNameCharacters",
        "PropertyChangeNotAllowed",
        "BadRequest",
        "MissingApiVersionParameter",
    }
)
_AUTH_CODES = frozenset({"InvalidAuthenticationToken", "AuthenticationFailed", "AuthorizationFailed"})
# ARM's answers for a scope above the agent pool that does not exist: the settings are wrong, the
# pool may well exist (in the right place). AKS itself answers a missing pool with code NotFound.
_MISSING_SCOPE_CODES = {
    "SubscriptionNotFound": "ARM_SUBSCRIPTION_ID",
    "InvalidSubscriptionId": "ARM_SUBSCRIPTION_ID",
    "ResourceGroupNotFound": "ARM_RESOURCE_GROUP",
    "ResourceNotFound": "ARM_RESOURCE_GROUP and AZURE_CLUSTER_NAME",
    "ParentResourceNotFound": "ARM_RESOURCE_GROUP and AZURE_CLUSTER_NAME",
}
_POOL_NOT_FOUND_CODE = "NotFound"
_POOL_NOT_FOUND_TEXT = "Agent Pool not found"
# AKS answers a VM size the subscription may not use with the generic code BadRequest; the reference
# (gpu-provisioner's AllNodesForMachine) documents this sentence as the only way to tell it apart.
_SKU_NOT_ALLOWED_TEXT = "is not allowed in your subscription in location"
# A local file the SDK reads is missing or unreadable (narrower than OSError, which network errors
# and TimeoutError also are).
_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def classify(
    *,
    status: int | None,
    code: str | None,
    message: str,
    retry_after: float | None = None,
    operation_failed: bool = False,
) -> errors.CloudError:
    """The failure kind of one ARM error (pure; the single place codes are interpreted).

    ``operation_failed``: the error came from a long-running operation that ended Failed/Canceled
    (its HTTP status is the poll's 200, so only the code says what went wrong).
    """
    kw: dict[str, Any] = {"code": code, "retry_after": retry_after}
    if code in _QUOTA_CODES:
        return errors.QuotaExceeded(message, **kw)
    if code in _CAPACITY_CODES:
        return errors.InsufficientCapacity(message, **kw)
    if code in _SKU_CODES:
        return errors.SkuNotAllowed(message, **kw)
    if code == "BadRequest" and _SKU_NOT_ALLOWED_TEXT in message:
        return errors.SkuNotAllowed(message, **kw)
    if code in _AUTH_CODES or status in (401, 403):
        return errors.Unauthorized(message, **kw)
    if code in _MISSING_SCOPE_CODES:
        return errors.ConfigurationError(f"{message} (check {_MISSING_SCOPE_CODES[code]})", **kw)
    if code == _POOL_NOT_FOUND_CODE or (status == 404 and code is None and _POOL_NOT_FOUND_TEXT in message):
        return errors.NotFound(message, **kw)
    if status == 404:
        # A 404 we cannot place (another code, a proxy's page): never taken for "the pool is gone".
        return errors.ConfigurationError(
            f"{message} (an unexpected 404: check ARM_ENDPOINT, ARM_SUBSCRIPTION_ID, ARM_RESOURCE_GROUP and "
            "AZURE_CLUSTER_NAME)",
            **kw,
        )
    if code in _IN_PROGRESS_CODES and status in (409, None) and not operation_failed:
        return errors.OperationInProgress(message, **kw)
    if status in (408, 429) or (status is not None and status >= 500) or code == "TooManyRequests":
        return errors.Transient(message, **kw)
    if operation_failed:
        return errors.OperationFailed(message, **kw)
    if code in _INVALID_CODES or status == 400:
        return errors.InvalidParameters(message, **kw)
    return errors.Transient(message, **kw)  # e.g. other 409 conflicts: retrying is the safe default


def _retry_after(error: HttpResponseError) -> float | None:
    response = error.response
    if response is None:
        return None
    headers: Mapping[str, str] = getattr(response, "headers", {})
    for header in ("Retry-After", "retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(header)
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue  # an HTTP date: rare from ARM; fall back to our own backoff
        return seconds / 1000 if header.endswith("-ms") else seconds
    return None


def translate(error: Exception, *, operation_failed: bool = False) -> errors.CloudError:
    """Turn an Azure SDK (or timeout) exception into a failure kind."""
    if isinstance(error, errors.CloudError):
        return error
    if isinstance(error, TimeoutError):
        return errors.Transient(f"Azure did not answer in time ({error or 'timeout'})")
    if isinstance(error, _FILE_ERRORS):
        # A local file the SDK reads (the federated token, the CA bundle) is gone or unreadable.
        return errors.Unauthorized(f"cannot read a file the Azure client needs: {error}")
    if isinstance(error, HttpResponseError):
        odata = error.error
        code = odata.code if odata is not None else None
        message = (odata.message if odata is not None else None) or error.message or str(error)
        return classify(
            status=error.status_code,
            code=code,
            message=message,
            retry_after=_retry_after(error),
            operation_failed=operation_failed,
        )
    if isinstance(error, (ServiceRequestError, ServiceResponseError)):
        return errors.Transient(f"cannot reach Azure: {error.message}")
    if isinstance(error, AzureError):
        return errors.Transient(error.message)
    raise error  # not an Azure failure: a bug, let it surface as one


class _IdentityCredential:
    """The workload-identity credential, with its refusals translated where they happen: inside the
    SDK pipeline a token failure looks like any other 400/401, so this is the one place that
    knows it came from Entra ID and not from ARM."""

    def __init__(
        self, credential: WorkloadIdentityCredential, *, client_id: str, tenant_id: str, token_file: str = ""
    ) -> None:
        self._credential = credential
        self._who = f"client id {client_id}, tenant {tenant_id}"
        self._token_file = token_file or "AZURE_FEDERATED_TOKEN_FILE"

    def _refused(self, error: ClientAuthenticationError) -> errors.CloudError:
        status = getattr(error.response, "status_code", None)
        if status in (408, 429) or (status is not None and status >= 500):
            # Entra ID throttled or failed: nothing is wrong with the identity, so retry as for ARM.
            return errors.Transient(
                f"Entra ID did not issue a token ({status}): {error.message}", retry_after=_retry_after(error)
            )
        return errors.Unauthorized(
            f"Entra ID refused the workload identity ({self._who}): {error.message}. {IDENTITY_SETUP_HINT}"
        )

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        try:
            return await self._credential.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )
        except ClientAuthenticationError as error:
            raise self._refused(error) from error
        except _FILE_ERRORS as error:
            raise self._unreadable_token_file(error) from error

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        try:
            return await self._credential.get_token_info(*scopes, options=options)
        except ClientAuthenticationError as error:
            raise self._refused(error) from error
        except _FILE_ERRORS as error:
            raise self._unreadable_token_file(error) from error

    def _unreadable_token_file(self, error: OSError) -> errors.CloudError:
        # The kubelet rotates the projected token file; if it vanishes (volume unmounted, path changed)
        # azure-identity's read fails with a bare OSError.
        return errors.Unauthorized(
            f"cannot read the federated token file ({self._token_file}) for the workload identity "
            f"({self._who}): {error.strerror or error}. Is the pod still labelled azure.workload.identity/use=true "
            "and its token volume mounted? " + IDENTITY_SETUP_HINT
        )

    async def close(self) -> None:
        await self._credential.close()

    async def __aenter__(self) -> _IdentityCredential:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class _LookOncePolling(AsyncARMPolling):
    """ARM polling that checks an operation's status at most once per run instead of sleeping
    until it finishes, so a reconcile can ask "done yet?" and return.

    ``AsyncLROBasePolling.run`` wraps ``_poll`` (its documented loop) with the translation of bad
    statuses into ``HttpResponseError``; only the loop is replaced here.
    """

    async def _poll(self) -> None:
        if not self.finished():
            await self.update_status()
        if self.finished():
            await super()._poll()  # reports Failed/Canceled and does the final GET of a PUT

    def suggested_delay(self) -> float | None:
        return self._extract_delay()


def pool_body(spec: InstanceSpec) -> AgentPool:
    """The agent-pool request body for an instance spec (gpu-provisioner's fields, GiB disk)."""
    return AgentPool(
        properties=AgentPoolManagedClusterAgentPoolProfileProperties(
            type_properties_type="VirtualMachineScaleSets",
            vm_size=spec.vm_size,
            os_type="Linux",
            os_sku=spec.os_sku,
            count=1,
            mode="User",
            os_disk_size_gb=spec.os_disk_size_gb,
            node_labels=dict(spec.labels),
            node_taints=list(spec.taints),
            tags=dict(spec.tags),
        )
    )


def _instance(pool: AgentPool) -> Instance:
    properties = pool.properties
    if properties is None:
        return Instance(name=str(pool.name), vm_size="", provisioning_state="")
    return Instance(
        name=str(pool.name),
        vm_size=str(properties.vm_size or ""),
        provisioning_state=str(properties.provisioning_state or ""),
        labels=dict(properties.node_labels or {}),
        tags=dict(properties.tags or {}),
    )


class AksCloudProvider:
    """The :class:`~gpu_provisioner.cloudprovider.CloudProvider` for AKS agent pools.

    Use as an async context manager (or call :meth:`close`): it owns an HTTP session.
    """

    def __init__(
        self,
        azure: AzureSettings,
        tuning: ProvisionerSettings | None = None,
        *,
        credential: AsyncTokenCredential | None = None,
    ) -> None:
        problems = azure.problems()
        if problems and credential is None:
            raise ValueError(azure.describe_problems())
        tuning = tuning or ProvisionerSettings()
        self._azure = azure
        self._tuning = tuning
        self._resource_group = cast(str, azure.resource_group)
        self._cluster = cast(str, azure.cluster_name)
        transport: dict[str, Any] = {
            "connection_timeout": tuning.request_timeout_s,
            "read_timeout": tuning.request_timeout_s,
        }
        self._session: aiohttp.ClientSession | None = None
        if azure.ca_bundle is not None:
            # azure-core turns a CA path (connection_verify) into a new SSL context on every
            # request, so no connection is ever reused: a TLS handshake and a pooled connection per
            # call. One context on one session keeps connections alive. (Needs a running loop:
            # build_operator builds the provider inside one.)
            context = ssl.create_default_context(cafile=str(azure.ca_bundle))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,  # azure-core decompresses itself
                trust_env=True,
            )
        self._transport_options = transport
        self._credential: AsyncTokenCredential = credential or cast(
            AsyncTokenCredential,
            _IdentityCredential(
                WorkloadIdentityCredential(
                    tenant_id=azure.tenant_id,
                    client_id=azure.client_id,
                    token_file_path=str(azure.federated_token_file),
                    authority=azure.authority_host,
                    retry_total=0,  # as for ARM: the controller retries, honouring Retry-After
                    **self._transport(),
                    **transport,
                ),
                client_id=str(azure.client_id),
                tenant_id=str(azure.tenant_id),
                token_file=str(azure.federated_token_file),
            ),
        )
        self._owns_credential = credential is None
        client_options: dict[str, Any] = {}
        if azure.api_version:
            client_options["api_version"] = azure.api_version
        self._client = ContainerServiceClient(
            self._credential,
            cast(str, azure.subscription_id),
            base_url=azure.arm_endpoint,
            credential_scopes=[azure.arm_scope],
            polling_interval=tuning.arm_polling_interval_s,
            # Retries happen in the controller, which requeues for the Retry-After instead of
            # sleeping inside a reconcile the way the SDK's retry policy would.
            retry_total=0,
            **self._transport(),
            **transport,
            **client_options,
        )

    def _transport(self) -> dict[str, Any]:
        """A transport on the shared session when a CA bundle is configured (else the SDK's own)."""
        if self._session is None:
            return {}
        return {"transport": AioHttpTransport(session=self._session, session_owner=False)}

    async def close(self) -> None:
        await self._client.close()
        if self._owns_credential:
            await self._credential.close()
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AksCloudProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- plumbing -------------------------------------------------------------------------------
    async def _call(self, what: Callable[[], Awaitable[T]], *, operation_failed: bool = False) -> T:
        try:
            async with asyncio.timeout(self._tuning.request_timeout_s):
                return await what()
        except Exception as error:
            raise translate(error, operation_failed=operation_failed) from error

    def _polling(self) -> _LookOncePolling:
        return _LookOncePolling(
            self._tuning.arm_polling_interval_s,
            path_format_arguments={"endpoint": self._azure.arm_endpoint},
            **self._transport_options,
        )

    @asynccontextmanager
    async def _resumed(self, operation: Operation) -> AsyncIterator[AsyncLROPoller[Any]]:
        pools = self._client.agent_pools
        try:
            if operation.kind == "create":
                poller: AsyncLROPoller[Any] = await pools.begin_create_or_update(
                    self._resource_group,
                    self._cluster,
                    operation.name,
                    cast(AgentPool, {}),  # ignored when resuming from a token
                    continuation_token=operation.token,
                    polling=self._polling(),
                )
            else:
                poller = await pools.begin_delete(
                    self._resource_group,
                    self._cluster,
                    operation.name,
                    continuation_token=operation.token,
                    polling=self._polling(),
                )
        except (ValueError, TypeError, KeyError) as error:
            raise errors.UnreadableOperation(f"unreadable continuation token for {operation.name}: {error}") from error
        yield poller

    # --- the CloudProvider protocol --------------------------------------------------------------
    async def create(self, spec: InstanceSpec) -> Operation:
        async def start() -> Operation:
            poller = await self._client.agent_pools.begin_create_or_update(
                self._resource_group, self._cluster, spec.name, pool_body(spec), polling=self._polling()
            )
            return Operation(kind="create", name=spec.name, token=poller.continuation_token())

        return await self._call(start)

    async def delete(self, name: str) -> Operation:
        async def start() -> Operation:
            poller = await self._client.agent_pools.begin_delete(
                self._resource_group, self._cluster, name, polling=self._polling()
            )
            return Operation(kind="delete", name=name, token=poller.continuation_token())

        return await self._call(start)

    async def poll(self, operation: Operation) -> OperationProgress:
        async def look() -> OperationProgress:
            async with self._resumed(operation) as poller:
                method = cast(_LookOncePolling, poller.polling_method())
                result = await poller.result()
                if not method.finished():
                    return OperationProgress(done=False, retry_after=method.suggested_delay())
                if operation.kind == "delete":
                    return OperationProgress(done=True)
                return OperationProgress(done=True, instance=_instance(cast(AgentPool, result)))

        try:
            return await self._call(look, operation_failed=True)
        except errors.NotFound:
            if operation.kind == "delete":
                # The pool, or only the operation id (expired, unknown), is gone: callers GET the
                # pool before they believe it deleted.
                return OperationProgress(done=True)
            raise

    async def get(self, name: str) -> Instance:
        async def fetch() -> Instance:
            return _instance(await self._client.agent_pools.get(self._resource_group, self._cluster, name))

        return await self._call(fetch)

    async def list(self) -> list[Instance]:
        async def collect() -> list[Instance]:
            return [
                _instance(pool) async for pool in self._client.agent_pools.list(self._resource_group, self._cluster)
            ]

        return await self._call(collect)
