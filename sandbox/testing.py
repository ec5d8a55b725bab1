"""pytest fixtures for testing against a real control plane: ``pytest_plugins = ["sandbox.testing"]``.

- ``control_plane`` (session): one ``full`` control plane (etcd, kube-apiserver, controller-manager,
  scheduler, kwok) with the project's CRDs installed. ``KAITO_TEST_PROFILE=apiserver`` starts the
  smaller profile instead, for suites that need no pods.
- ``kube_api`` (session): a kubernetes-asyncio ``ApiClient`` for the admin user.
- ``namespace`` (function): a fresh namespace per test, deleted afterwards; tests isolate by it.

The control plane's processes die with the test session, even when it is killed.
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
from sandbox.controlplane import ControlPlane, Profile
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig, install_crds


async def _install_project_crds(control_plane: ControlPlane) -> None:
    async with await api_client_from_kubeconfig(control_plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    profile = cast(Profile, os.environ.get("KAITO_TEST_PROFILE", "full"))
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), profile=profile)
    plane.start()
    try:
        asyncio.run(_install_project_crds(plane))
        yield plane
    finally:
        plane.stop()


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
