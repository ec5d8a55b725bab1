"""Registration claims a node with one strategic merge patch: our finalizer and owner reference are
added beside what others put there (never replacing it), only on the node version it looked at, and
a node that is already initialized gets the initialized label in the same write."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from gpu_provisioner.machine.draft import Draft
from gpu_provisioner.machine.initialization import LABEL_INITIALIZED, initialized_label_if_ready
from gpu_provisioner.machine.registration import LABEL_REGISTERED, Registration
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c
from kaito_operator.runtime import NODE, ApiError, Informer, KubeClient, RealClock, RuntimeMetrics
from kaito_operator.testing import delete_quietly, gpu_node

pytestmark = [pytest.mark.controlplane]

FOREIGN_OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": str(uuid.uuid4())}


def machine(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "karpenter.sh/v1alpha5",
        "kind": "Machine",
        "metadata": {"name": name, "uid": str(uuid.uuid4()), "labels": {c.LABEL_MACHINE_TYPE: "gpu"}},
        "spec": {"resources": {"requests": {}}},
    }


async def test_the_claim_merges_with_what_others_wrote_and_carries_the_initialized_label(kube_api: Any) -> None:
    metrics = RuntimeMetrics()
    client = KubeClient(kube_api, clock=RealClock(), metrics=metrics, qps=0, burst=1)
    name = f"aks-claim-{uuid.uuid4().hex[:6]}-vmss000000"
    body = gpu_node(name, labels={})
    body["metadata"]["finalizers"] = ["example.com/keep"]
    body["metadata"]["ownerReferences"] = [FOREIGN_OWNER]
    node = await client.create(NODE, body)
    try:
        ready = {**body["status"], "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}
        await client.patch(NODE, name, {"status": ready}, subresource="status")  # Ready, its GPUs registered
        stale = await client.get(NODE, name)
        await client.patch(NODE, name, {"metadata": {"annotations": {"heartbeat": "1"}}})  # someone else's write
        nodes = Informer(client, NODE, clock=RealClock(), metrics=metrics)
        registration = Registration(
            client=client, nodes=nodes, settings=ProvisionerSettings(), labels_at_claim=initialized_label_if_ready
        )
        owner = machine("claimer")
        with pytest.raises(ApiError) as refused:
            await registration._claim(Draft(owner), stale)
        assert refused.value.conflict, "a claim based on an old version of the node is refused"
        # kwok manages every node of the full profile and may write this one between our read and our
        # claim: such a claim is refused too, and made again from a fresh read (as the controller does).
        claims_refused_again = 0
        for _ in range(10):
            node = await client.get(NODE, name)
            try:
                await registration._claim(Draft(owner), node)
                break
            except ApiError as error:
                if not error.conflict:
                    raise
                claims_refused_again += 1
        else:
            pytest.fail("the node changed under every claim")

        claimed = await client.get(NODE, name)
        assert set(claimed["metadata"]["finalizers"]) == {"example.com/keep", c.MACHINE_FINALIZER}
        assert {ref["uid"] for ref in claimed["metadata"]["ownerReferences"]} == {
            FOREIGN_OWNER["uid"],
            owner["metadata"]["uid"],
        }
        labels = claimed["metadata"]["labels"]
        assert (labels[LABEL_REGISTERED], labels[LABEL_INITIALIZED]) == ("true", "true")
        assert claimed["metadata"]["annotations"]["heartbeat"] == "1"
        writes = metrics.api_requests_by_resource().get(("patch", "", "nodes", ""), 0)
        assert writes == 3 + claims_refused_again, "someone else's write, the refused claim, one claim with both labels"
    finally:
        await client.patch(NODE, name, {"metadata": {"finalizers": None}})
        await delete_quietly(client, NODE, name)
