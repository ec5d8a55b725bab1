"""A preset that cannot fit its instance type: ResourceReady False with the fit message, no Machines."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kaito.testing import running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.runtime import EVENT
from kaito_operator.testing import condition, plain_client, wait_for, wait_for_item
from tests.integration.workspace.workspace_testkit import delete_workspace_and_wait, machines_of, preset_workspace

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


async def test_a_preset_that_does_not_fit_reports_why_and_creates_nothing(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    workspace = preset_workspace(
        name="too-small",
        namespace=namespace,
        labels={"apps": f"big-{uuid.uuid4().hex[:6]}"},
        preset="falcon-40b",
        instance_type="Standard_NC6s_v3",
    )
    async with running_operator(kube_api) as operator:
        await client.create(WORKSPACE, workspace)
        failed = await wait_for(
            client,
            WORKSPACE,
            "too-small",
            lambda obj: condition(obj, c.COND_RESOURCE_READY).get("status") == "False",
            namespace=namespace,
            what="ResourceReady=False",
        )
        resource = condition(failed, c.COND_RESOURCE_READY)
        assert resource["reason"] == "workspaceResourceStatusFailed"
        # The admission rule's message, as the webhook would have answered (field first).
        assert resource["message"].startswith(
            "resource.instanceType: Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1 per node, "
            "but preset falcon-40b requires at least 2 per node"
        )
        assert "Insufficient total GPU memory" in resource["message"]
        assert condition(failed, c.COND_WORKSPACE_READY)["status"] == "False"
        await wait_for_item(
            client,
            EVENT,
            namespace,
            lambda e: e["type"] == "Warning" and e["reason"] == "workspaceResourceStatusFailed",
            field_selector="involvedObject.name=too-small",
        )
        assert await machines_of(client, namespace) == []
        await delete_workspace_and_wait(client, "too-small", namespace)
        # Read after later reconciles of the same key, which the queue runs only once earlier ones finished.
        errors = operator.metrics.registry.get_sample_value(
            "kaito_reconcile_errors_total", {"controller": "workspace", "kind": "permanent"}
        )
        assert errors is not None and errors >= 1
        registry = operator.metrics.registry
        retries = registry.get_sample_value("kaito_workqueue_retries_total", {"controller": "workspace"}) or 0
        # Only transient errors are retried: e.g. a write conflict while the deleted Workspace's
        # finalizer comes off. The permanent fit problem adds none, and nothing failed unexpectedly.
        transient = registry.get_sample_value(
            "kaito_reconcile_errors_total", {"controller": "workspace", "kind": "transient"}
        )
        unexpected = registry.get_sample_value(
            "kaito_reconcile_errors_total", {"controller": "workspace", "kind": "unexpected"}
        )
        assert not unexpected
        assert retries == (transient or 0), "a permanent problem is not retried"
