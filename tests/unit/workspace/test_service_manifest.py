"""The Workspace's Service."""

from __future__ import annotations

from kaito_operator.workspace.service import render_service
from kaito_operator.workspace.workload import RENDERED_HASH_ANNOTATION
from tests.unit.workspace.workspace_builders import UID, workspace


def test_cluster_ip_service_port_80_to_5000() -> None:
    service = render_service(workspace())
    service["metadata"]["annotations"].pop(RENDERED_HASH_ANNOTATION)
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "ws1",
            "namespace": "team",
            "labels": {"kaito.sh/workspace": "ws1"},
            "ownerReferences": [
                {
                    "apiVersion": "kaito.sh/v1alpha1",
                    "kind": "Workspace",
                    "name": "ws1",
                    "uid": UID,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
            "annotations": {},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {"kaito.sh/workspace": "ws1"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 5000}],
        },
    }


def test_load_balancer_only_for_the_exact_value_true() -> None:
    assert render_service(workspace(annotations={"kaito.sh/enablelb": "True"}))["spec"]["type"] == "LoadBalancer"
    assert render_service(workspace(annotations={"kaito.sh/enablelb": "true"}))["spec"]["type"] == "ClusterIP"
