"""The admission webhook under load: N concurrent AdmissionReviews (default 200) sent straight to the
webhook over TLS, as the API server sends them, against the webhook's 5 s timeout.

Starts an ``apiserver`` control plane (the webhook keeps its certificate in a Secret and dry-runs
custom templates there), runs the operator with only its webhook in this process, sends a mix of
valid and invalid Workspaces (preset and template), and prints the latency percentiles, the slowest
answer and how many were answered within the timeout.

Run: .venv/bin/python benchmarks/webhook_load.py [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from kaito.testing import running_operator, webhook_settings
from kaito_operator.api.crds import all_crds
from kaito_operator.runtime import NAMESPACE
from kaito_operator.testing import plain_client
from kaito_operator.webhook.keeper import SecretCertificates
from kaito_operator.webhook.server import WEBHOOK_PATH
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds

NAMESPACE_NAME = "load"
TIMEOUT_S = 5.0
"""The webhook configuration's timeoutSeconds."""


def review(index: int) -> dict[str, Any]:
    workspace: dict[str, Any] = {
        "apiVersion": "kaito.sh/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"load-{index}", "namespace": NAMESPACE_NAME, "uid": str(uuid.uuid4())},
        "resource": {"count": 1 + index % 12, "instanceType": "Standard_NC12s_v3", "labelSelector": {}},
        "inference": {"preset": {"name": "falcon-7b"}},
    }
    if index % 4 == 0:  # a custom template: dry-run on the API server
        workspace["inference"] = {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "kaito.sh", "version": "v1alpha1", "kind": "Workspace"},
            "operation": "CREATE",
            "object": workspace,
        },
    }


async def one(http: aiohttp.ClientSession, url: str, body: dict[str, Any], ca: ssl.SSLContext) -> float:
    started = time.monotonic()
    async with http.post(url, json=body, ssl=ca, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as response:
        answer = await response.json()
        assert answer["response"]["uid"] == body["request"]["uid"]
    return time.monotonic() - started


async def run(args: argparse.Namespace, plane: ControlPlane) -> list[list[float | None]]:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())
        kube = plain_client(api)
        await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE_NAME}})
        settings = {**webhook_settings(NAMESPACE_NAME), "webhook_url": None}  # called directly: not registered
        async with running_operator(api, [], **settings) as operator:
            certificates = operator.certificates
            assert isinstance(certificates, SecretCertificates) and certificates.ca_bundle is not None
            ca = ssl.create_default_context(cadata=certificates.ca_bundle.decode())
            url = f"https://127.0.0.1:{operator.webhook_port}{WEBHOOK_PATH}"
            rounds: list[list[float | None]] = []
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                for _ in range(args.rounds):
                    results = await asyncio.gather(
                        *(one(http, url, review(i), ca) for i in range(args.requests)), return_exceptions=True
                    )
                    rounds.append([r if isinstance(r, float) else None for r in results])
            return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="the first round also opens the TLS connections")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-webhook-") as state:
        plane = ControlPlane(Path(state), profile="apiserver")
        plane.start()
        try:
            rounds = asyncio.run(run(args, plane))
        finally:
            plane.stop()
    print(f"{args.requests} concurrent admissions per round, timeout {TIMEOUT_S:.0f} s")
    failed = 0
    for number, latencies in enumerate(rounds, 1):
        answered = sorted(x for x in latencies if x is not None)
        failed += len(latencies) - len(answered)
        if not answered:
            print(f"  round {number}: none answered")
            continue
        p50 = statistics.median(answered)
        p99 = answered[max(0, int(len(answered) * 0.99) - 1)]
        print(
            f"  round {number}: answered within the timeout {len(answered)}/{len(latencies)}; "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, slowest {answered[-1] * 1000:.0f} ms"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
