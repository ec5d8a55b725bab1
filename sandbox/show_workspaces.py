"""Print the Workspaces of the cluster in $KUBECONFIG like ``kubectl get wks -A`` (which it runs when
kubectl is installed; otherwise it reads the same printer columns itself)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from kaito_operator.api import constants as c
from sandbox.kube import REQUEST_TIMEOUT, api_client_from_kubeconfig

COLUMNS = ("NAMESPACE", "NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY")


def _condition(obj: dict[str, Any], kind: str) -> str:
    for condition in obj.get("status", {}).get("conditions", []) or []:
        if condition.get("type") == kind:
            return str(condition.get("status", ""))
    return ""


async def _rows(kubeconfig: Path) -> list[tuple[str, ...]]:
    async with await api_client_from_kubeconfig(kubeconfig) as api:
        listing = await client.CustomObjectsApi(api).list_cluster_custom_object(
            c.KAITO_GROUP, c.KAITO_VERSION, c.WORKSPACE_PLURAL, _request_timeout=REQUEST_TIMEOUT
        )
    return [
        (
            item["metadata"]["namespace"],
            item["metadata"]["name"],
            item.get("resource", {}).get("instanceType", ""),
            _condition(item, c.COND_RESOURCE_READY),
            _condition(item, c.COND_INFERENCE_READY),
            _condition(item, c.COND_WORKSPACE_READY),
        )
        for item in listing.get("items", [])
    ]


def main() -> int:
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("error: KUBECONFIG is not set", file=sys.stderr)
        return 2
    kubectl = shutil.which("kubectl")
    if kubectl:
        print("$ kubectl get wks -A")
        return subprocess.run([kubectl, "get", "wks", "-A"], check=False, timeout=60).returncode
    rows = [COLUMNS, *asyncio.run(_rows(Path(kubeconfig)))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
