"""The AKS provider, built on the real azure-mgmt-containerservice and azure-identity clients, against
the simulator over HTTPS: the agent-pool lifecycle with ARM's LRO protocol, error kinds, throttling
and workload-identity token checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.identity.aio import WorkloadIdentityCredential
from azure.mgmt.containerservice.aio import ContainerServiceClient

from gpu_provisioner import errors
from gpu_provisioner.aks import AksCloudProvider
from gpu_provisioner.cloudprovider import Operation
from gpu_provisioner.settings import AzureSettings, ProvisionerSettings
from sandbox.aks_simulator import AksSimulator, Fault
from tests.integration.provisioner.provisioner_helpers import FAST, a_spec, until_done


async def test_an_agent_pool_is_created_listed_and_deleted_through_long_running_operations(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    operation = await provider.create(a_spec("gpu1"))
    assert operation.kind == "create" and operation.token
    created = await until_done(provider, operation)
    assert created.instance is not None
    assert created.instance.provisioning_state == "Succeeded"
    assert created.instance.vm_size == "Standard_NC24ads_A100_v4"

    assert (await provider.get("gpu1")).tags["kaito-py-machine"] == "gpu1"
    assert [pool.name for pool in await provider.list()] == ["gpu1"]

    await until_done(provider, await provider.delete("gpu1"))
    with pytest.raises(errors.NotFound, match="Agent Pool not found"):
        await provider.get("gpu1")

    put = simulator.requests_for("PUT", "gpu1")[0]
    assert put.status == 201
    assert put.body["properties"] | {} == {
        "type": "VirtualMachineScaleSets",
        "vmSize": "Standard_NC24ads_A100_v4",
        "osType": "Linux",
        "osSKU": "Ubuntu",
        "count": 1,
        "mode": "User",
        "osDiskSizeGB": 256,
        "nodeLabels": {"kaito.sh/workspace": "ws", "kaito.sh/machine-type": "gpu"},
        "nodeTaints": ["sku=gpu:NoSchedule"],
        "tags": {"kaito-py-cluster": "kaito-cluster", "kaito-py-machine": "gpu1"},
    }
    assert simulator.requests_for("OPERATION"), "the operation status URL was polled"
    assert simulator.requests_for("DELETE", "gpu1")[0].status == 202


async def test_deleting_a_missing_pool_raises_not_found(provider: AksCloudProvider) -> None:
    with pytest.raises(errors.NotFound, match="Agent Pool not found"):
        await provider.delete("nothere")


async def test_polling_never_waits_for_the_operation(provider: AksCloudProvider, simulator: AksSimulator) -> None:
    simulator.config.provisioning_delay_s = 30
    operation = await provider.create(a_spec("slow1"))
    progress = await provider.poll(operation)
    assert not progress.done
    assert progress.retry_after == simulator.config.retry_after_s
    # Looked once: one status request, not a poll loop (the operation runs for 30 s more).
    assert len(simulator.requests_for("OPERATION")) == 1


async def test_a_create_resumes_from_its_continuation_token_in_a_new_client(
    azure_settings: AzureSettings, simulator: AksSimulator
) -> None:
    async with AksCloudProvider(azure_settings, FAST) as before_restart:
        operation = await before_restart.create(a_spec("resume1"))
    async with AksCloudProvider(azure_settings, FAST) as after_restart:
        progress = await until_done(after_restart, operation)
    assert progress.instance is not None and progress.instance.name == "resume1"
    assert len(simulator.requests_for("PUT", "resume1")) == 1


async def test_a_second_put_while_creating_is_an_operation_in_progress(provider: AksCloudProvider) -> None:
    await provider.create(a_spec("busy1"))
    with pytest.raises(errors.OperationInProgress, match="in progress create node pool operation"):
        await provider.create(a_spec("busy1"))


async def test_a_put_of_an_existing_pool_updates_it(provider: AksCloudProvider) -> None:
    await until_done(provider, await provider.create(a_spec("same1")))
    progress = await until_done(provider, await provider.create(a_spec("same1")))
    assert progress.instance is not None and progress.instance.provisioning_state == "Succeeded"


async def test_quota_exceeded_is_permanent_and_keeps_the_azure_message(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault.quota_exceeded())
    with pytest.raises(errors.QuotaExceeded) as raised:
        await provider.create(a_spec("quota1"))
    assert raised.value.permanent
    assert raised.value.code == "QuotaExceeded"
    assert "exceeding approved standardNCADSA100v4Family Cores quota" in raised.value.message


async def test_a_vm_size_the_subscription_may_not_use_is_sku_not_allowed(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.config.allowed_vm_sizes = ["Standard_NC24ads_A100_v4"]
    with pytest.raises(errors.SkuNotAllowed) as raised:
        await provider.create(a_spec("sku1", vm_size="Standard_ND96asr_v4"))
    assert raised.value.message == (
        "The VM size of Standard_ND96asr_v4 is not allowed in your subscription in location 'eastus'."
    )


async def test_an_invalid_request_is_invalid_parameters(provider: AksCloudProvider) -> None:
    with pytest.raises(errors.InvalidParameters, match="Agent Pool name 'Bad-Name' is invalid"):
        await provider.create(a_spec("Bad-Name"))


async def test_an_allocation_failure_in_the_operation_is_insufficient_capacity(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault.allocation_failed())
    operation = await provider.create(a_spec("alloc1"))
    with pytest.raises(errors.InsufficientCapacity) as raised:
        await until_done(provider, operation)
    assert raised.value.code == "AllocationFailed"
    assert (await provider.get("alloc1")).provisioning_state == "Failed"


async def test_throttling_is_transient_and_carries_retry_after(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault.throttle("PUT", retry_after=2))
    with pytest.raises(errors.Transient) as raised:
        await provider.create(a_spec("throttle1"))
    assert raised.value.retry_after == 2
    # The provider does not retry inside the call: the controller requeues after Retry-After.
    assert [r.status for r in simulator.requests_for("PUT", "throttle1")] == [429]


async def test_a_server_error_once_is_transient_and_the_next_try_works(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault.server_error("PUT"))
    with pytest.raises(errors.Transient):
        await provider.create(a_spec("flaky1"))
    await until_done(provider, await provider.create(a_spec("flaky1")))


async def test_a_throttled_status_poll_is_transient(provider: AksCloudProvider, simulator: AksSimulator) -> None:
    operation = await provider.create(a_spec("pollslow1"))
    simulator.add_fault(Fault.throttle("OPERATION", retry_after=3))
    with pytest.raises(errors.Transient) as raised:
        await provider.poll(operation)
    assert raised.value.retry_after == 3


async def test_every_call_is_bounded_by_the_request_timeout(
    azure_settings: AzureSettings, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault(target="GET", status=500, delay_s=3))
    tuning = ProvisionerSettings(arm_polling_interval_s=0.05, request_timeout_s=0.5)
    async with AksCloudProvider(azure_settings, tuning) as impatient:
        await impatient.list()  # acquires the token first, so the timeout below is the GET's
        with pytest.raises(errors.Transient, match="did not answer in time"):
            await impatient.get("any")  # the answer (a 500) would have been a different Transient


async def test_the_sdk_retry_policy_honours_retry_after(azure_settings: AzureSettings, simulator: AksSimulator) -> None:
    """The simulator's 429 is one the SDK's own retry policy understands: it waits Retry-After."""
    simulator.add_fault(Fault.throttle("LIST", retry_after=1))
    ca = str(azure_settings.ca_bundle)
    async with (
        WorkloadIdentityCredential(
            tenant_id=azure_settings.tenant_id,
            client_id=azure_settings.client_id,
            token_file_path=str(azure_settings.federated_token_file),
            authority=azure_settings.authority_host,
            connection_verify=ca,
        ) as credential,
        ContainerServiceClient(
            credential, str(azure_settings.subscription_id), base_url=simulator.endpoint, connection_verify=ca
        ) as client,
    ):
        pools = [pool async for pool in client.agent_pools.list("kaito-rg", "kaito-cluster")]
    assert pools == []
    throttled, retried = simulator.requests_for("LIST")
    assert (throttled.status, retried.status) == (429, 200)
    assert retried.time - throttled.time >= 1.0


async def test_the_sdk_poller_completes_a_create_on_its_own(
    azure_settings: AzureSettings, simulator: AksSimulator
) -> None:
    """The simulator's LRO protocol is complete enough for the SDK's blocking poller (the final GET)."""
    ca = str(azure_settings.ca_bundle)
    async with (
        WorkloadIdentityCredential(
            tenant_id=azure_settings.tenant_id,
            client_id=azure_settings.client_id,
            token_file_path=str(azure_settings.federated_token_file),
            authority=azure_settings.authority_host,
            connection_verify=ca,
        ) as credential,
        ContainerServiceClient(
            credential,
            str(azure_settings.subscription_id),
            base_url=simulator.endpoint,
            connection_verify=ca,
            polling_interval=0.05,
        ) as client,
    ):
        from gpu_provisioner.aks import pool_body

        poller = await client.agent_pools.begin_create_or_update(
            "kaito-rg", "kaito-cluster", "sdk1", pool_body(a_spec())
        )
        pool = await poller.result()
        assert pool.properties is not None and pool.properties.provisioning_state == "Succeeded"
        delete = await client.agent_pools.begin_delete("kaito-rg", "kaito-cluster", "sdk1")
        await delete.result()
    assert simulator.requests_for("GET", "sdk1")[-1].status == 200  # the final GET of the PUT


async def test_workload_identity_presents_the_federated_token_for_the_arm_scope(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    await provider.list()
    token_request = simulator.requests_for("TOKEN")[0]
    assert token_request.status == 200
    assert token_request.path == f"/{simulator.config.tenant_id}/oauth2/v2.0/token"
    assert token_request.body == {
        "client_assertion": simulator.config.federated_token,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_id": simulator.config.client_id,
        "grant_type": "client_credentials",
        "scope": "https://management.azure.com/.default",
    }


async def test_a_wrong_client_id_is_refused_with_a_clear_error(
    azure_settings: AzureSettings, simulator: AksSimulator
) -> None:
    wrong = azure_settings.model_copy(update={"client_id": "11111111-2222-3333-4444-555555555555"})
    async with AksCloudProvider(wrong, FAST) as cloud:
        with pytest.raises(errors.Unauthorized) as raised:
            await cloud.list()
    message = str(raised.value)
    assert "Entra ID refused the workload identity" in message
    assert "AADSTS700016" in message
    assert "11111111-2222-3333-4444-555555555555" in message
    assert "scripts/setup-identity.sh" in message
    assert not simulator.requests_for("LIST"), "no ARM call without a token"


async def test_a_service_account_token_the_identity_is_not_federated_with_is_refused(
    azure_settings: AzureSettings, simulator: AksSimulator, tmp_path: Path
) -> None:
    other = tmp_path / "other-token"
    other.write_text("a-token-of-another-service-account")
    async with AksCloudProvider(azure_settings.model_copy(update={"federated_token_file": other}), FAST) as cloud:
        with pytest.raises(errors.Unauthorized, match="AADSTS700213"):
            await cloud.list()


async def test_a_wrong_tenant_is_refused(azure_settings: AzureSettings) -> None:
    wrong = azure_settings.model_copy(update={"tenant_id": "99999999-0000-0000-0000-000000000000"})
    async with AksCloudProvider(wrong, FAST) as cloud:
        with pytest.raises(errors.Unauthorized, match="AADSTS90002"):
            await cloud.list()


def test_a_provider_without_identity_refuses_to_start_with_the_missing_names() -> None:
    with pytest.raises(ValueError, match="AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE"):
        AksCloudProvider(AzureSettings(subscription_id="s", resource_group="r", cluster_name="c"))


async def test_a_token_the_sdk_cannot_read_is_an_unreadable_operation(provider: AksCloudProvider) -> None:
    with pytest.raises(errors.UnreadableOperation, match="unreadable continuation token for gpu1"):
        await provider.poll(Operation(kind="create", name="gpu1", token="bm90IGEgdG9rZW4="))


async def test_entra_id_throttling_or_failing_is_transient_not_a_refused_identity(
    provider: AksCloudProvider, simulator: AksSimulator
) -> None:
    simulator.add_fault(Fault(target="TOKEN", status=503, code="temporarily_unavailable", message="try later"))
    with pytest.raises(errors.Transient, match="Entra ID did not issue a token \\(503\\)"):
        await provider.list()
    assert len(simulator.requests_for("TOKEN")) == 1, "no retry sleeping inside the call"
    assert await provider.list() == []  # the next try gets a token


@pytest.mark.parametrize(
    ("setting", "code"),
    [
        ("ARM_RESOURCE_GROUP", "ResourceGroupNotFound"),
        ("AZURE_CLUSTER_NAME", "ResourceNotFound"),
        ("ARM_SUBSCRIPTION_ID", "SubscriptionNotFound"),
    ],
)
async def test_a_wrong_resource_group_cluster_or_subscription_is_a_configuration_error(
    azure_settings: AzureSettings, simulator: AksSimulator, setting: str, code: str
) -> None:
    wrong = azure_settings.model_copy(
        update={
            {"ARM_RESOURCE_GROUP": "resource_group", "AZURE_CLUSTER_NAME": "cluster_name"}.get(
                setting, "subscription_id"
            ): "wrong0"
        }
    )
    async with AksCloudProvider(wrong, FAST) as cloud:
        for call in (cloud.list(), cloud.get("gpu1"), cloud.delete("gpu1")):
            with pytest.raises(errors.ConfigurationError) as raised:
                await call
            assert raised.value.code == code and setting in str(raised.value)
            assert not isinstance(raised.value, errors.NotFound)


async def test_a_token_file_that_disappears_is_unauthorized_not_a_traceback(
    azure_settings: AzureSettings, simulator: AksSimulator
) -> None:
    assert azure_settings.federated_token_file is not None
    async with AksCloudProvider(azure_settings, FAST) as cloud:
        azure_settings.federated_token_file.unlink()
        with pytest.raises(errors.Unauthorized, match="cannot read the federated token file"):
            await cloud.list()
