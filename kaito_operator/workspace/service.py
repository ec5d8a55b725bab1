"""The Workspace's Service ``<name>``: port 80 (``http``) to the server's port 5000 on its pods.

ClusterIP, or LoadBalancer when the Workspace has the annotation ``kaito.sh/enablelb: "True"``
(that exact value, as in Kaito). A LoadBalancer without ``kaito.sh/api-key-secret`` is open to
anyone who can reach its address; the controller warns about it with an Event.
"""

from __future__ import annotations

from typing import Any, Final

from kaito_operator.api import constants as c
from kaito_operator.api.workspace import Workspace
from kaito_operator.runtime.kinds import SERVICE
from kaito_operator.workspace.names import service_name
from kaito_operator.workspace.workload import CONTAINER_PORT, owner_reference, selector_labels, stamp_rendered_hash

SERVICE_PORT: Final = 80
PUBLIC_WITHOUT_KEY_MESSAGE: Final = (
    f'{c.ANNOTATION_ENABLE_LB}: "True" exposes the inference endpoint through a LoadBalancer without an API '
    f"key: anyone who can reach its address can use the model. Name a Secret holding the key "
    f"{c.API_KEY_SECRET_KEY!r} in the annotation {c.ANNOTATION_API_KEY_SECRET}"
)


def service_type(workspace: Workspace) -> str:
    annotations = workspace.metadata.get("annotations") or {}
    return "LoadBalancer" if annotations.get(c.ANNOTATION_ENABLE_LB) == "True" else "ClusterIP"


def unprotected_public_endpoint(workspace: Workspace) -> bool:
    annotations = workspace.metadata.get("annotations") or {}
    return (
        service_type(workspace) == "LoadBalancer" and not (annotations.get(c.ANNOTATION_API_KEY_SECRET) or "").strip()
    )


def render_service(workspace: Workspace) -> dict[str, Any]:
    return stamp_rendered_hash(
        {
            "apiVersion": SERVICE.api_version,
            "kind": SERVICE.kind,
            "metadata": {
                "name": service_name(workspace.metadata["name"]),
                "namespace": workspace.metadata["namespace"],
                "labels": selector_labels(workspace),
                "ownerReferences": [owner_reference(workspace)],
            },
            "spec": {
                "type": service_type(workspace),
                "selector": selector_labels(workspace),
                "ports": [{"name": "http", "protocol": "TCP", "port": SERVICE_PORT, "targetPort": CONTAINER_PORT}],
            },
        }
    )
