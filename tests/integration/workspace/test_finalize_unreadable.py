"""A Workspace the operator cannot serve (a preset this version does not know) is still deletable:
on the real API server, the operator removes its own finalizer (a JSON patch guarded by a test of
the finalizer's position) and leaves everyone else's in place.

Such a Workspace exists when it was stored while the admission webhook was not registered, or under
an older version whose preset list had a name this version dropped (the CRD's preset name is a plain
string; the webhook, not the schema, refuses unknown names). No webhook is registered here.
"""

from __future__ import annotations

from typing import Any

import pytest

from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.testing import gone, plain_client, wait_for

pytestmark = [pytest.mark.controlplane]

OTHER_FINALIZER = "someone.else/keep"


def _workspace(name: str, namespace: str, finalizers: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name, "namespace": namespace, "finalizers": finalizers},
        "resource": {"instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"apps": "dropped"}}},
        "inference": {"preset": {"name": "a-preset-this-version-dropped"}},
    }


async def test_a_workspace_with_an_unknown_preset_loses_only_our_finalizer_when_deleted(
    kube_api: Any, namespace: str
) -> None:
    client = plain_client(kube_api)
    await client.create(WORKSPACE, _workspace("ws1", namespace, [OTHER_FINALIZER, c.WORKSPACE_FINALIZER]))
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
