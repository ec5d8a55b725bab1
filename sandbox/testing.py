"""pytest fixtures for testing against a real control plane: ``pytest_plugins = ["sandbox.testing"]``.

- ``control_plane`` (session): one ``full`` control plane (etcd, kube-apiserver, controller-manager,
  scheduler, kwok) with the project's CRDs installed. ``KAITO_TEST_PROFILE=apiserver`` starts the
  smaller profile instead, for suites that need no pods.
- ``kube_api`` (session): a kubernetes-asyncio ``ApiClient`` for the admin user.
- ``namespace`` (function): a fresh namespace per test, deleted afterwards; tests isolate by it.

The control plane's processes die with the test session, even when it is killed. As root, its pods
get addresses from a range reserved by an ``unreachable`` route (``sandbox.pod_network``), released
when the control plane stops.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import cast

import pytest
from kubernetes_asyncio import client

from kaito_operator.api.crds import all_crds
from sandbox import pod_network
from sandbox.controlplane import DEFAULT_POD_CIDR, ControlPlane, Profile
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig, install_crds


async def _install_project_crds(control_plane: ControlPlane) -> None:
    async with await api_client_from_kubeconfig(control_plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    profile = cast(Profile, os.environ.get("KAITO_TEST_PROFILE", "full"))
    # As root, kwok's pod IPs come from a range reserved by an unreachable route: a pod's address then
    # fails on this machine instead of going anywhere. Without root, kwok's default range, never dialled.
    record = pod_network.reserve() if profile == "full" and pod_network.network_mode() == "namespaces" else None
    pod_cidr = record.kwok_cidr if record is not None else DEFAULT_POD_CIDR
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), profile=profile, pod_cidr=pod_cidr)
    try:
        plane.start()
        asyncio.run(_install_project_crds(plane))
        yield plane
    finally:
        plane.stop()
        if record is not None:
            pod_network.release(record)


@pytest.fixture(scope="session")
async def kube_api(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    api = await api_client_from_kubeconfig(control_plane.kubeconfig)
    async with api:
        yield api


@pytest.fixture
async def namespace(kube_api: client.ApiClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube_api)
    await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name)), _request_timeout=REQUEST_TIMEOUT
    )
    yield name
    await core.delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
