"""A Workspace the operator cannot read (a preset this version no longer knows) is still deletable:
on the real API server, the operator removes its own finalizer (a JSON patch guarded by a test of
the finalizer's position) and leaves everyone else's in place.

Such a Workspace exists when it was stored under an older CRD whose preset list had a name this
version dropped; the API server does not re-validate stored objects when a CRD changes. The test
recreates that: it lifts the preset-name enum from the CRD, stores the Workspace, and puts the enum
back before the operator starts, so the operator's patch meets today's schema (the API server lets
an unchanged invalid field stand: CRD validation ratcheting).
"""

from __future__ import annotations

from typing import Any

import pytest

from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import ApiError, KubeClient, ResourceKind
from kaito_operator.testing import eventually, gone, plain_client, wait_for

pytestmark = [pytest.mark.controlplane]

CRD = ResourceKind(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", namespaced=False
)
PRESET_ENUM = "/spec/versions/0/schema/openAPIV3Schema/properties/inference/properties/preset/properties/name/enum"
OTHER_FINALIZER = "someone.else/keep"


def _workspace(name: str, namespace: str, finalizers: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name, "namespace": namespace, "finalizers": finalizers},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": "dropped"}}},
        "inference": {"preset": {"name": "a-preset-this-version-dropped"}},
    }


async def _created(client: KubeClient, obj: dict[str, Any]) -> dict[str, Any] | None:
    """The object created, or None while the API server refuses it as invalid."""
    try:
        return await client.create(WORKSPACE, obj)
    except ApiError as error:
        if error.status != 422:
            raise
        return None


async def _refused(client: KubeClient, obj: dict[str, Any]) -> bool | None:
    created = await _created(client, obj)
    if created is not None:  # the old schema still served this request: try again
        await client.delete(WORKSPACE, obj["metadata"]["name"], obj["metadata"]["namespace"])
        return None
    return True


async def test_a_workspace_with_an_unknown_preset_loses_only_our_finalizer_when_deleted(
    kube_api: Any, namespace: str
) -> None:
    client = plain_client(kube_api)
    crd_name = f"{c.WORKSPACE_PLURAL}.{c.KAITO_GROUP}"
    crd = await client.get(CRD, crd_name)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    enum = schema["properties"]["inference"]["properties"]["preset"]["properties"]["name"]["enum"]
    await client.patch(CRD, crd_name, [{"op": "remove", "path": PRESET_ENUM}], patch_type="json")
    try:
        # The API server takes up a changed CRD schema a moment after the write.
        workspace = _workspace("ws1", namespace, [OTHER_FINALIZER, c.WORKSPACE_FINALIZER])
        await eventually(lambda: _created(client, workspace), what="the Workspace stored under the old preset list")
    finally:
        await client.patch(CRD, crd_name, [{"op": "add", "path": PRESET_ENUM, "value": enum}], patch_type="json")
    probe = _workspace("probe", namespace, [])
    await eventually(lambda: _refused(client, probe), what="the preset list back in force")
    await client.delete(WORKSPACE, "ws1", namespace)

    async with running_operator(kube_api):
        left = await wait_for(
            client,
            WORKSPACE,
            "ws1",
            lambda obj: obj is not None and c.WORKSPACE_FINALIZER not in obj["metadata"].get("finalizers", []),
            namespace=namespace,
            what="the operator's finalizer removed",
        )
        assert left is not None
        assert left["metadata"]["finalizers"] == [OTHER_FINALIZER], "the other finalizer stays"

    await client.patch(WORKSPACE, "ws1", {"metadata": {"finalizers": None}}, namespace=namespace)
    await wait_for(client, WORKSPACE, "ws1", gone, namespace=namespace, what="the Workspace gone")
