"""The AdmissionReview answer (admission.k8s.io/v1) and Kaito v0.1's webhook name and path."""

from __future__ import annotations

import copy
from typing import Any

from kaito_operator.webhook.server import WEBHOOK_NAME, WEBHOOK_PATH, WorkspaceAdmission, webhook_configuration
from kaito_operator.workspace.validation import Limits
from kaito_operator.workspace.workload import RenderOptions

ADMISSION = WorkspaceAdmission(Limits(max_count=3), RenderOptions())
WORKSPACE: dict[str, Any] = {
    "metadata": {"name": "ws", "namespace": "default"},
    "resource": {"count": 1, "instanceType": "Standard_NC12s_v3", "labelSelector": {"matchLabels": {"a": "b"}}},
    "inference": {"preset": {"name": "falcon-7b"}},
}
KIND = {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"}


def review(operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    request = {"uid": "abc", "kind": KIND, "operation": operation, "object": obj, "oldObject": old}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def test_kaito_v01_webhook_name_and_path() -> None:
    # kaito-compat.md §4: webhook validation.workspace.kaito.sh, path /validate/workspace.kaito.sh.
    assert (WEBHOOK_NAME, WEBHOOK_PATH) == ("validation.workspace.kaito.sh", "/validate/workspace.kaito.sh")


async def test_an_allowed_create_echoes_the_uid() -> None:
    answer = await ADMISSION.review(review("CREATE", WORKSPACE))
    assert answer["kind"] == "AdmissionReview" and answer["apiVersion"] == "admission.k8s.io/v1"
    assert answer["response"] == {"uid": "abc", "allowed": True}


async def test_a_refusal_carries_422_and_one_cause_per_field() -> None:
    bad = copy.deepcopy(WORKSPACE)
    bad["resource"]["count"] = 4
    bad["metadata"]["name"] = "a.b"
    response = (await ADMISSION.review(review("CREATE", bad)))["response"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 422 and response["status"]["reason"] == "Invalid"
    assert {cause["field"] for cause in response["status"]["details"]["causes"]} == {"metadata.name", "resource.count"}


async def test_an_update_of_metadata_only_is_allowed_on_an_invalid_workspace() -> None:
    old = copy.deepcopy(WORKSPACE)
    old["resource"]["count"] = 50
    new = copy.deepcopy(old)
    new["metadata"]["labels"] = {"x": "y"}
    assert (await ADMISSION.review(review("UPDATE", new, old)))["response"]["allowed"] is True


async def test_other_kinds_and_operations_are_allowed() -> None:
    other = review("CREATE", {})
    other["request"]["kind"] = {"group": "", "version": "v1", "kind": "Pod"}
    assert (await ADMISSION.review(other))["response"]["allowed"] is True
    assert (await ADMISSION.review(review("DELETE", {})))["response"]["allowed"] is True


def test_the_registration_is_scoped_and_fails_closed() -> None:
    [webhook] = webhook_configuration("x", {"url": "https://127.0.0.1:1/validate/workspace.kaito.sh"})["webhooks"]
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    assert webhook["rules"] == [
        {
            "apiGroups": ["kaito.sh"],
            "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"],
            "resources": ["workspaces"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["timeoutSeconds"] <= 10
