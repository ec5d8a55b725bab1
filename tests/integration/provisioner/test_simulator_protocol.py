"""The simulator speaks ARM and Entra ID the way the services do, on the wire (plain aiohttp)."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kaito_operator.testing import eventually
from sandbox.aks_simulator import AksSimulator, Fault, SimulatorConfig
from sandbox.aks_simulator.nodes import node_manifest

API = "api-version=2024-01-01"


@pytest.fixture
async def http(simulator: AksSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    context = ssl.create_default_context(cafile=str(simulator.ca_path))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        yield session


async def bearer(http: aiohttp.ClientSession, simulator: AksSimulator) -> dict[str, str]:
    cfg = simulator.config
    form = {
        "grant_type": "client_credentials",
        "client_id": cfg.client_id,
        "client_assertion": cfg.federated_token,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "scope": "https://management.azure.com/.default",
    }
    async with http.post(f"{simulator.endpoint}/{cfg.tenant_id}/oauth2/v2.0/token", data=form) as response:
        assert response.status == 200
        token = await response.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == cfg.token_lifetime_s
    return {"Authorization": f"Bearer {token['access_token']}"}


def pools_url(simulator: AksSimulator, *, lowercase: bool = False) -> str:
    cfg = simulator.config
    path = (
        f"/subscriptions/{cfg.subscription_id}/resourceGroups/{cfg.resource_group}/providers/"
        f"Microsoft.ContainerService/managedClusters/{cfg.cluster_name}/agentPools"
    )
    return simulator.endpoint + (path.lower() if lowercase else path)


BODY: dict[str, Any] = {"properties": {"vmSize": "Standard_NC6s_v3", "count": 1, "mode": "User"}}


async def test_arm_calls_without_a_valid_bearer_token_get_401_in_the_arm_error_shape(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    for headers in ({}, {"Authorization": "Bearer not-a-token-we-issued"}):
        async with http.get(f"{pools_url(simulator)}?{API}", headers=headers) as response:
            assert response.status == 401
            body = await response.json()
            assert set(body["error"]) == {"code", "message"}
            assert body["error"]["code"] in ("AuthenticationFailed", "InvalidAuthenticationToken")
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_routes_match_case_insensitively_and_any_api_version(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    auth = await bearer(http, simulator)
    async with http.put(
        f"{pools_url(simulator, lowercase=True)}/pool1?api-version=2023-07-01", json=BODY, headers=auth
    ) as response:
        assert response.status == 201
    async with http.get(f"{pools_url(simulator)}/POOL1?api-version=2026-08-01", headers=auth) as response:
        assert response.status == 200
        assert (await response.json())["name"] == "pool1"


async def test_a_create_follows_arms_lro_protocol(http: aiohttp.ClientSession, simulator: AksSimulator) -> None:
    auth = await bearer(http, simulator)
    async with http.put(f"{pools_url(simulator)}/pool2?{API}", json=BODY, headers=auth) as response:
        assert response.status == 201
        created = await response.json()
        async_url = response.headers["Azure-AsyncOperation"]
        location = response.headers["Location"]
        assert response.headers["Retry-After"] == str(simulator.config.retry_after_s)
    assert created["properties"]["provisioningState"] == "Creating"
    assert created["type"] == "Microsoft.ContainerService/managedClusters/agentPools"
    assert "/providers/Microsoft.ContainerService/locations/eastus/operations/" in async_url
    assert "/operationresults/" in location and API in location

    async with http.get(async_url, headers=auth) as response:
        assert (await response.json())["status"] == "InProgress"
    async with http.get(location, headers=auth) as response:
        assert response.status == 202

    async def succeeded() -> dict[str, Any] | None:
        async with http.get(async_url, headers=auth) as response:
            status: dict[str, Any] = await response.json()
        return status if status["status"] == "Succeeded" else None

    final = await eventually(succeeded, what="the create operation")
    assert {"startTime", "endTime", "name", "id"} <= set(final)
    async with http.get(location, headers=auth) as response:
        assert response.status == 204
    async with http.get(f"{pools_url(simulator)}/pool2?{API}", headers=auth) as response:
        assert (await response.json())["properties"]["provisioningState"] == "Succeeded"


@pytest.mark.parametrize(
    ("properties", "status", "code", "text"),
    [
        (
            {"vmSize": "Standard_Z9"},
            400,
            "BadRequest",
            "The VM size of Standard_Z9 is not allowed in your subscription",
        ),
        ({"vmSize": "Standard_NC6s_v3", "count": 1001}, 400, "InvalidParameter", "count"),
        ({"vmSize": "Standard_NC6s_v3", "mode": "System", "count": 0}, 400, "InvalidParameter", "between 1 and 1000"),
        ({"vmSize": "Standard_NC6s_v3", "osDiskSizeGB": 10}, 400, "InvalidParameter", "osDiskSizeGB"),
        ({"vmSize": "Standard_NC6s_v3", "nodeTaints": ["no-effect"]}, 400, "InvalidParameter", "Taint"),
        ({"vmSize": "Standard_NC6s_v3", "tags": {"a/b": "c"}}, 400, "InvalidTagNameCharacters", "tag name"),
        ({}, 400, "InvalidParameter", "vmSize"),
    ],
)
async def test_bodies_are_validated_as_aks_does(
    http: aiohttp.ClientSession,
    simulator: AksSimulator,
    *,
    properties: dict[str, Any],
    status: int,
    code: str,
    text: str,
) -> None:
    auth = await bearer(http, simulator)
    async with http.put(f"{pools_url(simulator)}/pool3?{API}", json={"properties": properties}, headers=auth) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["code"] == code
    assert text in error["message"]


async def test_a_bad_pool_name_and_a_missing_api_version_are_refused(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    auth = await bearer(http, simulator)
    async with http.put(f"{pools_url(simulator)}/has-dash?{API}", json=BODY, headers=auth) as response:
        assert (response.status, (await response.json())["error"]["code"]) == (400, "InvalidParameter")
    async with http.get(f"{pools_url(simulator)}/pool1", headers=auth) as response:
        assert (await response.json())["error"]["code"] == "MissingApiVersionParameter"


async def test_list_pages_with_next_link(http: aiohttp.ClientSession, simulator: AksSimulator) -> None:
    simulator.config.list_page_size = 2
    auth = await bearer(http, simulator)
    for index in range(5):
        async with http.put(f"{pools_url(simulator)}/p{index}?{API}", json=BODY, headers=auth) as response:
            assert response.status == 201
    names: list[str] = []
    url: str | None = f"{pools_url(simulator)}?{API}"
    while url:
        async with http.get(url, headers=auth) as response:
            page = await response.json()
        names += [pool["name"] for pool in page["value"]]
        url = page.get("nextLink")
    assert names == ["p0", "p1", "p2", "p3", "p4"]


async def test_faults_and_the_request_record_are_reachable_over_http(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    fault = {"target": "PUT", "status": 429, "code": "TooManyRequests", "message": "slow down", "retry_after": 1}
    async with http.post(f"{simulator.endpoint}/_admin/faults", json=fault) as response:
        assert response.status == 200
    auth = await bearer(http, simulator)
    async with http.put(f"{pools_url(simulator)}/pool4?{API}", json=BODY, headers=auth) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "1"
    async with http.put(f"{pools_url(simulator)}/pool4?{API}", json=BODY, headers=auth) as response:
        assert response.status == 201, "the fault was used up"
    async with http.get(f"{simulator.endpoint}/_admin/requests") as response:
        record = await response.json()
    puts = [r for r in record if r["target"] == "PUT"]
    assert [r["status"] for r in puts] == [429, 201]
    assert puts[0]["body"] == BODY and puts[0]["pool"] == "pool4" and puts[0]["time"] > 0
    async with http.patch(f"{simulator.endpoint}/_admin/config", json={"provisioning_delay_s": 7}) as response:
        assert (await response.json())["provisioning_delay_s"] == 7
    assert simulator.config.provisioning_delay_s == 7


async def test_deleting_during_a_create_cancels_the_create(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    simulator.config.provisioning_delay_s = 30
    auth = await bearer(http, simulator)
    async with http.put(f"{pools_url(simulator)}/pool5?{API}", json=BODY, headers=auth) as response:
        create_status = response.headers["Azure-AsyncOperation"]
    async with http.delete(f"{pools_url(simulator)}/pool5?{API}", headers=auth) as response:
        assert response.status == 202
    async with http.get(create_status, headers=auth) as response:
        assert (await response.json())["status"] == "Canceled"

    async def gone() -> bool | None:
        async with http.get(f"{pools_url(simulator)}/pool5?{API}", headers=auth) as response:
            return True if response.status == 404 else None

    await eventually(gone, what="pool5 to be deleted")


async def test_an_injected_token_fault_is_answered_in_the_aad_shape() -> None:
    config = SimulatorConfig(faults=[Fault(target="TOKEN", status=400, code="invalid_client", message="nope")])
    async with AksSimulator(config) as simulator:
        context = ssl.create_default_context(cafile=str(simulator.ca_path))
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
            http.post(f"{simulator.endpoint}/{config.tenant_id}/oauth2/v2.0/token", data={}) as response,
        ):
            assert response.status == 400
            assert await response.json() == {"error": "invalid_client", "error_description": "nope"}


def test_the_node_of_a_pool_looks_like_an_aks_node() -> None:
    node = node_manifest(
        node_name="aks-gpu1-12345678-vmss000000",
        provider_id="azure:///subscriptions/s/resourceGroups/mc_rg_c_eastus/providers/Microsoft.Compute/"
        "virtualMachineScaleSets/aks-gpu1-12345678-vmss/virtualMachines/0",
        pool="gpu1",
        properties={
            "vmSize": "Standard_NC24ads_A100_v4",
            "osDiskSizeGB": 256,
            "nodeLabels": {"kaito.sh/workspace": "ws"},
            "nodeTaints": ["sku=gpu:NoSchedule", "dedicated=:NoExecute"],
        },
        location="eastus",
        node_resource_group="MC_rg_c_eastus",
    )
    labels = node["metadata"]["labels"]
    assert labels["agentpool"] == labels["kubernetes.azure.com/agentpool"] == "gpu1"
    assert labels["node.kubernetes.io/instance-type"] == "Standard_NC24ads_A100_v4"
    assert labels["topology.kubernetes.io/region"] == "eastus"
    assert labels["kubernetes.io/os"] == "linux" and labels["kubernetes.io/arch"] == "amd64"
    assert labels["kaito.sh/workspace"] == "ws"
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["spec"]["taints"] == [
        {"key": "sku", "value": "gpu", "effect": "NoSchedule"},
        {"key": "dedicated", "effect": "NoExecute"},
    ]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "1"
    assert node["status"]["capacity"]["cpu"] == "24"


async def test_the_simulator_runs_as_a_process_and_prints_what_an_operator_needs(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox.aks_simulator",
        "--port",
        "0",
        "--tls-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            info = json.loads(await process.stdout.readline())
        environment = info["environment"]
        assert environment["ARM_ENDPOINT"] == environment["AZURE_AUTHORITY_HOST"] == info["endpoint"]
        token = await asyncio.to_thread(Path(environment["AZURE_FEDERATED_TOKEN_FILE"]).read_text)
        assert token == SimulatorConfig().federated_token
        context = ssl.create_default_context(cafile=info["ca"])
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http,
            http.get(f"{info['endpoint']}/_admin/requests") as response,
        ):
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await process.wait() == 0


async def test_a_second_put_while_the_create_runs_is_recorded_as_acting_twice(
    http: aiohttp.ClientSession, simulator: AksSimulator
) -> None:
    simulator.config.provisioning_delay_s = 30  # the create stays InProgress for the whole test
    auth = await bearer(http, simulator)
    for pool in ("pool1", "pool2"):
        async with http.put(f"{pools_url(simulator)}/{pool}?{API}", json=BODY, headers=auth) as response:
            assert response.status == 201
    async with http.put(f"{pools_url(simulator)}/pool1?{API}", json=BODY, headers=auth) as response:
        assert response.status == 409, "AKS refuses a PUT while the pool's create runs"
    doubles = simulator.puts_while_in_flight()
    assert [(r.pool, r.status) for r in doubles] == [("pool1", 409)], "only the repeat, never the first PUTs"
