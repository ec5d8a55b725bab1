"""The admission webhook registered on a real kube-apiserver (by URL on 127.0.0.1, as the sandbox does):
Kaito v0.1's rules answer with Kaito's messages, ours name the field, updates that change nothing are
accepted, and a Workspace admitted while the webhook was down fails the same way in the reconciler.

Kaito's messages are written out from kaito-compat.md §4, not imported from the code under test.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kaito.operator import Operator
from kaito.testing import admission_webhook, running_operator
from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.runtime import ApiError, KubeClient
from kaito_operator.testing import condition, force_delete, plain_client, wait_for

pytestmark = [pytest.mark.controlplane]

Change = Callable[[dict[str, Any]], None]


def workspace(namespace: str, name: str = "ws", **resource: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": namespace},
        "resource": {
            "instanceType": "Standard_NC12s_v3",
            "labelSelector": {"matchLabels": {"apps": f"adm-{uuid.uuid4().hex[:6]}"}},
            **resource,
        },
        "inference": {"preset": {"name": "falcon-7b"}},
    }


@pytest.fixture
async def webhook(kube_api: Any, namespace: str) -> AsyncIterator[Operator]:
    async with admission_webhook(kube_api, namespace) as operator:
        yield operator
        kube = plain_client(kube_api)
        for obj in (await kube.list(WORKSPACE, namespace))[0]:
            await force_delete(kube, WORKSPACE, obj["metadata"]["name"], namespace)


async def refusal(kube: KubeClient, body: dict[str, Any]) -> str:
    with pytest.raises(ApiError) as raised:
        await kube.create(WORKSPACE, body)
    assert raised.value.status == 422, raised.value
    message = raised.value.api_message
    assert 'admission webhook "validation.workspace.kaito.sh" denied the request' in message, message
    return message


async def replace_with(kube: KubeClient, namespace: str, name: str, change: Change) -> dict[str, Any]:
    """GET, change, PUT the whole object; again on a write conflict (the operator writes it too)."""
    for _ in range(20):
        current = await kube.get(WORKSPACE, name, namespace)
        change(current)
        try:
            return await kube.replace(WORKSPACE, current)
        except ApiError as error:
            if not error.conflict:
                raise
    raise AssertionError(f"{name} kept changing under the test")


def preset_on(ws: dict[str, Any], preset: str, instance_type: str) -> None:
    ws["inference"]["preset"]["name"] = preset
    ws["resource"]["instanceType"] = instance_type


def _with(namespace: str, change: Change, **resource: Any) -> dict[str, Any]:
    body = workspace(namespace, **resource)
    change(body)
    return body


KAITO_RULES: list[tuple[str, Change, str, str]] = [
    ("neither", lambda ws: ws.update(inference={}), "inference", "Preset or Template must be specified"),
    (
        "both",
        lambda ws: ws["inference"].update(template={"spec": {"containers": [{"name": "a", "image": "nginx"}]}}),
        "inference",
        "Preset and Template cannot be set at the same time",
    ),
    (
        "unsupported-preset",
        lambda ws: ws["inference"]["preset"].update(name="gpt-9"),
        "inference.preset.name",
        "Unsupported preset name gpt-9",
    ),
    (
        "private-no-image",
        lambda ws: ws["inference"].update(preset={"name": "llama-2-7b", "accessMode": "private"}),
        "inference.preset.presetOptions.image",
        "When AccessMode is private, an image must be provided in PresetOptions",
    ),
    (
        "unsupported-sku",
        lambda ws: ws["resource"].update(instanceType="Standard_E8s_v5"),
        "resource.instanceType",
        "Unsupported instance type Standard_E8s_v5. Supported SKUs: ",
    ),
    (
        "gpu-count",
        lambda ws: preset_on(ws, "falcon-40b", "Standard_NC6s_v3"),
        "resource.instanceType",
        "Insufficient number of GPUs: Instance type Standard_NC6s_v3 provides 1 per node, but preset falcon-40b "
        "requires at least 2 per node",
    ),
    (
        "gpu-memory",
        lambda ws: preset_on(ws, "llama-2-7b", "Standard_NV12"),
        "resource.instanceType",
        "Insufficient GPU memory: Instance type Standard_NV12 provides 8 per GPU, but preset llama-2-7b requires "
        "at least",
    ),
    (
        "total-memory",
        lambda ws: preset_on(ws, "falcon-40b", "Standard_NC24s_v3"),
        "resource.instanceType",
        "Insufficient total GPU memory: Instance type Standard_NC24s_v3 has a total of 64, but preset falcon-40b "
        "requires at least",
    ),
    (
        "selector-exists",
        lambda ws: ws["resource"].update(labelSelector={"matchExpressions": [{"key": "apps", "operator": "Exists"}]}),
        "resource.labelSelector.matchExpressions[0]",
        "Only allow matchLabels or 'IN' matchExpression",
    ),
    (
        "selector-multi-in",
        lambda ws: ws["resource"].update(
            labelSelector={"matchExpressions": [{"key": "apps", "operator": "In", "values": ["a", "b"]}]}
        ),
        "resource.labelSelector.matchExpressions[0]",
        "Only allow matchLabels or 'IN' matchExpression",
    ),
]


async def test_each_kaito_v01_rule_answers_with_its_message(webhook: Operator, kube_api: Any, namespace: str) -> None:
    kube = plain_client(kube_api)
    for case, change, field, kaito_message in KAITO_RULES:
        message = await refusal(kube, _with(namespace, change))
        assert f"{field}: {kaito_message}" in message, (case, message)


OUR_RULES: list[tuple[str, Change, str, str]] = [
    ("count", lambda ws: ws["resource"].update(count=10000), "resource.count", "10000"),
    ("name-dots", lambda ws: ws["metadata"].update(name="my.workspace"), "metadata.name", "'my.workspace'"),
    ("name-long", lambda ws: ws["metadata"].update(name="w" * 70), "metadata.name", "63"),
    (
        "cpu-size",
        lambda ws: preset_on(ws, "falcon-7b", "Standard_D4s_v3"),
        "resource.instanceType",
        "Standard_D4s_v3",
    ),
    (
        "selector-never-on-our-nodes",
        lambda ws: ws["resource"].update(labelSelector={"matchLabels": {"kubernetes.io/arch": "arm64"}}),
        "resource.labelSelector",
        "kubernetes.io/arch=arm64",
    ),
    (
        "template-invalid-pod",
        lambda ws: ws.update(inference={"template": {"spec": {"containers": [{"name": "no-image"}]}}}),
        "inference.template",
        "image",
    ),
]


async def test_each_new_rule_names_the_field_and_the_value(webhook: Operator, kube_api: Any, namespace: str) -> None:
    kube = plain_client(kube_api)
    for case, change, field, detail in OUR_RULES:
        message = await refusal(kube, _with(namespace, change))
        assert f"{field}: " in message and detail in message, (case, message)


async def test_a_valid_template_is_admitted(webhook: Operator, kube_api: Any, namespace: str) -> None:
    kube = plain_client(kube_api)
    body = workspace(namespace, "tmpl", instanceType="Standard_D4s_v3")
    body["inference"] = {"template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}}
    await kube.create(WORKSPACE, body)


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("resource.count", lambda ws: ws["resource"].update(count=2)),
        ("resource.instanceType", lambda ws: ws["resource"].update(instanceType="Standard_NC24s_v3")),
        ("resource.labelSelector", lambda ws: ws["resource"].update(labelSelector={"matchLabels": {"a": "b"}})),
        ("inference.preset", lambda ws: ws["inference"]["preset"].update(name="falcon-7b-instruct")),
    ],
)
async def test_immutable_fields(webhook: Operator, kube_api: Any, namespace: str, field: str, change: Change) -> None:
    kube = plain_client(kube_api)
    await kube.create(WORKSPACE, workspace(namespace, "imm"))
    with pytest.raises(ApiError) as raised:
        await replace_with(kube, namespace, "imm", change)
    assert f"{field}: field is immutable" in raised.value.api_message


async def test_updates_that_change_nothing_meaningful_are_accepted(
    webhook: Operator, kube_api: Any, namespace: str
) -> None:
    kube = plain_client(kube_api)
    await kube.create(WORKSPACE, workspace(namespace, "empties"))

    def empties(ws: dict[str, Any]) -> None:
        # What a Go client that writes empty structs sends: presetOptions {} and accessMode "".
        ws["inference"]["preset"].update(presetOptions={}, accessMode="")

    updated = await replace_with(kube, namespace, "empties", empties)
    assert updated["inference"]["preset"]["presetOptions"] == {}

    def finalizer(ws: dict[str, Any]) -> None:
        # A full PUT that only adds a finalizer (how Go clients update metadata).
        ws["metadata"]["finalizers"] = [*ws["metadata"].get("finalizers", []), "example.com/keep"]

    again = await replace_with(kube, namespace, "empties", finalizer)
    assert "example.com/keep" in again["metadata"]["finalizers"]


async def test_a_workspace_admitted_while_the_webhook_was_down_fails_without_machines(
    kube_api: Any, namespace: str
) -> None:
    kube = plain_client(kube_api)
    body = workspace(namespace, "slipped", count=50)  # no webhook registered: the API server admits it
    async with running_operator(kube_api, max_workspace_count=10):
        await kube.create(WORKSPACE, body)
        failed = await wait_for(
            kube,
            WORKSPACE,
            "slipped",
            lambda obj: condition(obj, c.COND_RESOURCE_READY).get("status") == "False",
            namespace=namespace,
            what="ResourceReady=False",
        )
        message = condition(failed, c.COND_RESOURCE_READY)["message"]
        # The webhook's message for the same object (count between 1 and the limit).
        assert message.startswith("resource.count: 50 is not allowed") and "between 1 and 10" in message
        assert condition(failed, c.COND_WORKSPACE_READY)["status"] == "False"
        selector = f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}"
        assert (await kube.list(MACHINE, label_selector=selector))[0] == []
        await force_delete(kube, WORKSPACE, "slipped", namespace)
