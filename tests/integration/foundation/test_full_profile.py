"""The ``full`` profile runs workloads: a Deployment gets Running, Ready pods on kwok nodes."""

from __future__ import annotations

import asyncio
import time
import uuid

from kubernetes_asyncio import client

from sandbox.kube import REQUEST_TIMEOUT


def _fake_node(name: str) -> client.V1Node:
    resources = {"cpu": "8", "memory": "32Gi", "pods": "110"}
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name, labels={"kubernetes.io/hostname": name}, annotations={"kwok.x-k8s.io/node": "fake"}
        ),
        status=client.V1NodeStatus(capacity=resources, allocatable=resources),
    )


async def test_a_two_replica_deployment_becomes_ready_on_two_kwok_nodes(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    suffix = uuid.uuid4().hex[:6]
    nodes = [f"kwok-{suffix}-{i}" for i in range(2)]
    for name in nodes:
        await core.create_node(_fake_node(name), _request_timeout=REQUEST_TIMEOUT)
    try:
        labels = {"app": f"web-{suffix}"}
        deployment = client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image="nginx")],
                        # Only this test's nodes, one pod on each.
                        node_selector=None,
                        affinity=client.V1Affinity(
                            node_affinity=client.V1NodeAffinity(
                                required_during_scheduling_ignored_during_execution=client.V1NodeSelector(
                                    node_selector_terms=[
                                        client.V1NodeSelectorTerm(
                                            match_expressions=[
                                                client.V1NodeSelectorRequirement(
                                                    key="kubernetes.io/hostname", operator="In", values=nodes
                                                )
                                            ]
                                        )
                                    ]
                                )
                            ),
                            pod_anti_affinity=client.V1PodAntiAffinity(
                                required_during_scheduling_ignored_during_execution=[
                                    client.V1PodAffinityTerm(
                                        label_selector=client.V1LabelSelector(match_labels=labels),
                                        topology_key="kubernetes.io/hostname",
                                    )
                                ]
                            ),
                        ),
                    ),
                ),
            ),
        )
        await apps.create_namespaced_deployment(namespace, deployment, _request_timeout=REQUEST_TIMEOUT)
        deadline = time.monotonic() + 90
        while True:
            current = await apps.read_namespaced_deployment_status("web", namespace, _request_timeout=REQUEST_TIMEOUT)
            if (current.status.ready_replicas or 0) == 2:
                break
            assert time.monotonic() < deadline, f"deployment not ready: {current.status}"
            await asyncio.sleep(0.2)  # poll interval while waiting on a condition with a deadline
        pods = await core.list_namespaced_pod(namespace, label_selector=f"app=web-{suffix}")
        assert sorted(p.spec.node_name for p in pods.items) == sorted(nodes)
        assert all(p.status.phase == "Running" and p.status.pod_ip for p in pods.items)
    finally:
        for name in nodes:
            await core.delete_node(name, _request_timeout=REQUEST_TIMEOUT)
