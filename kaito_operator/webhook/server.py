"""The validating admission webhook for Workspaces: AdmissionReview (admission.k8s.io/v1) in and out.

Kaito v0.1's webhook name and path are kept (``validation.workspace.kaito.sh``,
``/validate/workspace.kaito.sh``). The rules are the Workspace package's (validation.py), the same
ones the reconciler applies; a custom template is also dry-run as the Deployment it would become.
A refusal is a 422 ``Invalid`` status whose message lists ``field: why`` for each problem, and whose
details carry one cause per field.

The answer must come within the configuration's timeout (the API server fails the request after
it, ``failurePolicy: Fail``): the rules are pure and quick, and the dry run has its own, shorter,
time limit; when the dry run cannot be done (API server busy) the Workspace is admitted with a
warning and the reconciler dry-runs it again before it creates any Machine.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Final

from aiohttp import web
from pydantic import ValidationError

from kaito_operator.api.constants import KAITO_GROUP, WORKSPACE_KIND
from kaito_operator.api.workspace import Workspace
from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.errors import ApiError
from kaito_operator.workspace.dry_run import dry_run_workload
from kaito_operator.workspace.validation import FieldError, Limits, describe, validate_create, validate_update
from kaito_operator.workspace.workload import RenderOptions

log = logging.getLogger(__name__)

WEBHOOK_NAME: Final = "validation.workspace.kaito.sh"
WEBHOOK_PATH: Final = "/validate/workspace.kaito.sh"
DRY_RUN_TIMEOUT_S: Final = 3.0


class WorkspaceAdmission:
    """Decides one AdmissionRequest. ``client``: for the template dry run (None: skip it)."""

    def __init__(self, limits: Limits, options: RenderOptions, client: KubeClient | None = None) -> None:
        self._limits = limits
        self._options = options
        self._client = client

    async def decide(self, request: dict[str, Any]) -> tuple[list[FieldError], list[str]]:
        """The problems (empty: allowed) and warnings for an AdmissionRequest."""
        kind = request.get("kind") or {}
        if kind.get("group") != KAITO_GROUP or kind.get("kind") != WORKSPACE_KIND:
            return [], []
        new = request.get("object") or {}
        old = request.get("oldObject")
        operation = request.get("operation")
        if operation == "CREATE":
            errors = validate_create(new, self._limits)
        elif operation == "UPDATE" and isinstance(old, dict):
            errors = validate_update(old, new, self._limits)
            if not errors and (old.get("inference") or {}).get("template") == (new.get("inference") or {}).get(
                "template"
            ):
                return [], []  # nothing new to dry-run
        else:
            return [], []
        if errors or (new.get("inference") or {}).get("template") is None or self._client is None:
            return errors, []
        return await self._dry_run(new)

    async def _dry_run(self, obj: dict[str, Any]) -> tuple[list[FieldError], list[str]]:
        assert self._client is not None
        try:
            workspace = Workspace.model_validate(obj)
            async with asyncio.timeout(DRY_RUN_TIMEOUT_S):
                problem = await dry_run_workload(self._client, workspace, self._options)
        except (ApiError, TimeoutError, ValidationError, ValueError) as error:
            log.warning("template dry run not done: %s", error)
            return [], [f"the template could not be checked now ({error}); the operator checks it before it provisions"]
        return ([problem] if problem else []), []

    async def review(self, review: dict[str, Any]) -> dict[str, Any]:
        """An AdmissionReview with its ``response``."""
        request = review.get("request") or {}
        errors, warnings = await self.decide(request)
        response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": not errors}
        if errors:
            response["status"] = {
                "code": 422,
                "reason": "Invalid",
                "message": describe(errors),
                "details": {"causes": [{"field": e.field, "message": e.message} for e in errors]},
            }
        if warnings:
            response["warnings"] = warnings
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def admission_app(admission: WorkspaceAdmission) -> web.Application:
    async def validate(request: web.Request) -> web.Response:
        try:
            review = json.loads(await request.read())
        except ValueError as error:
            return web.Response(status=400, text=f"not an AdmissionReview: {error}")
        if not isinstance(review, dict):
            return web.Response(status=400, text="not an AdmissionReview: expected a JSON object")
        return web.json_response(await admission.review(review))

    app = web.Application(client_max_size=8 * 1024 * 1024)  # a Workspace with a large template
    app.router.add_post(WEBHOOK_PATH, validate)
    return app


def webhook_configuration(
    name: str,
    client_config: dict[str, Any],
    *,
    namespace_selector: dict[str, Any] | None = None,
    timeout_seconds: int = 5,
) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends Workspace CREATE/UPDATE here. ``client_config``:
    ``{"service": {...}}`` in a cluster (the chart), ``{"url": ...}`` for the sandbox; caBundle included
    when known (the operator writes it otherwise)."""
    webhook: dict[str, Any] = {
        "name": WEBHOOK_NAME,
        "admissionReviewVersions": ["v1"],
        "clientConfig": client_config,
        "rules": [
            {
                "apiGroups": [KAITO_GROUP],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["workspaces"],
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "timeoutSeconds": timeout_seconds,
        "matchPolicy": "Equivalent",
    }
    if namespace_selector is not None:
        webhook["namespaceSelector"] = namespace_selector
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [webhook],
    }
