"""Small kubernetes-asyncio helpers for the sandbox and the tests: a client from a kubeconfig,
installing CRDs and waiting until they are served, and applying YAML manifests.

Manifests are applied with server-side apply through the dynamic client, so any kind works and a
second apply of the same file changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.rest import ApiException
from kubernetes_asyncio.dynamic import DynamicClient

REQUEST_TIMEOUT = 30.0
FIELD_MANAGER = "kaito-sandbox"


async def api_client_from_kubeconfig(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    return client.ApiClient(configuration)


async def install_crds(api: client.ApiClient, crds: Iterable[dict[str, Any]], timeout: float = 60.0) -> None:
    """Create or update each CRD, then wait until the API server serves it (Established)."""
    definitions = list(crds)
    await apply_objects(api, definitions)
    ext = client.ApiextensionsV1Api(api)
    names = [crd["metadata"]["name"] for crd in definitions]
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            current = await ext.read_custom_resource_definition(name, _request_timeout=REQUEST_TIMEOUT)
            conditions = current.status.conditions or [] if current.status else []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} was not Established within {timeout:.0f}s")
            await asyncio.sleep(0.1)  # poll interval while the API server registers the CRD


def load_manifests(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


async def apply_objects(
    api: client.ApiClient, objects: Iterable[dict[str, Any]], namespace: str = "default", *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Server-side apply each object (namespaced ones default to ``namespace``); return what was stored
    (``dry_run``: what would be, validated and admitted by the API server but not stored)."""
    applied = []
    async with DynamicClient(api) as dynamic:
        for obj in objects:
            resource = await dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            kwargs: dict[str, Any] = {}
            if resource.namespaced:
                kwargs["namespace"] = obj.get("metadata", {}).get("namespace") or namespace
            try:
                result = await dynamic.server_side_apply(
                    resource,
                    body=obj,
                    name=obj["metadata"]["name"],
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True,
                    dry_run="All" if dry_run else None,
                    _request_timeout=REQUEST_TIMEOUT,
                    **kwargs,
                )
            except ApiException as error:
                body = error.body.decode() if isinstance(error.body, bytes) else error.body
                raise ValueError(f"{obj['kind']} {obj['metadata']['name']} was rejected: {body}") from error
            applied.append(result.to_dict())
    return applied
