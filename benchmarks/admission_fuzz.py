"""Fuzz admission and the reconciler at full size: N generated Workspaces (default 500; valid and
invalid, within the CRD schema and outside it) against a real API server with the webhook registered
and the operator (workspace controller + GPU provisioner against the AKS simulator) running.

Starts its own ``full`` control plane and simulator, runs the operator in this process, and prints the
counts by outcome (refused by the schema or the webhook; Ready; failed with which condition and reason;
not terminal by the deadline), the violations (refusals that name no field, Machines for a Workspace
that cannot fit), the workspace controller's reconciles per accepted Workspace and the wall time.
The bounded run of the test suite is tests/e2e/test_e2e_admission_fuzz.py.

Run: .venv/bin/python benchmarks/admission_fuzz.py [--workspaces 500] [--seed 1] [--deadline 300]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path
from typing import Any

from gpu_provisioner.settings import AzureSettings
from gpu_provisioner.setup import ProvisionerFactory
from gpu_provisioner.testing import fast_provisioner
from kaito import admission_fuzz
from kaito.operator import DEFAULT_CONTROLLERS, ControllerFactory
from kaito.testing import admission_webhook
from kaito_operator.api import constants as c
from kaito_operator.api.crds import all_crds
from kaito_operator.runtime import NAMESPACE
from kaito_operator.testing import plain_client
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from sandbox.controlplane import ControlPlane
from sandbox.kube import api_client_from_kubeconfig, install_crds

NAMESPACE_NAME = "fuzz"


async def run(args: argparse.Namespace, plane: ControlPlane, state: Path) -> dict[str, Any]:
    config = SimulatorConfig(kubeconfig=plane.kubeconfig, provisioning_delay_s=1.0, deletion_delay_s=0.3)
    async with AksSimulator(config) as simulator, await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())
        kube = plain_client(api)
        await kube.create(NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE_NAME}})
        environment = simulator.operator_environment(simulator.write_federated_token(state / "token"))
        selector = f"{c.LABEL_WORKSPACE_NAMESPACE}={NAMESPACE_NAME}"
        provisioner = ProvisionerFactory(
            azure=AzureSettings.model_validate(environment), settings=fast_provisioner(selector)
        )
        bodies = [
            admission_fuzz.place(body, index, NAMESPACE_NAME)
            for index, body in enumerate(admission_fuzz.generate(args.workspaces, seed_value=args.seed))
        ]
        factories: list[ControllerFactory] = [*DEFAULT_CONTROLLERS, provisioner]
        async with admission_webhook(api, NAMESPACE_NAME, factories, max_workspace_count=args.max_count) as operator:
            report = await admission_fuzz.run(kube, NAMESPACE_NAME, bodies, deadline_s=args.deadline)
            wrong = await admission_fuzz.machines_that_cannot_fit(kube, NAMESPACE_NAME, report)
            registry = operator.metrics.registry
            reconciles = sum(
                registry.get_sample_value("kaito_reconcile_total", {"controller": "workspace", "result": result}) or 0
                for result in ("success", "requeue", "error", "permanent_error")
            )
            failure = operator.manager.failure
        return {"report": report, "wrong": wrong, "reconciles": reconciles, "failure": failure}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspaces", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=300.0, help="seconds for every accepted one to end")
    parser.add_argument("--max-count", type=int, default=2, help="the operator's KAITO_MAX_WORKSPACE_COUNT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaito-bench-fuzz-") as state:
        plane = ControlPlane(Path(state) / "plane", profile="full")
        plane.start()
        try:
            result = asyncio.run(run(args, plane, Path(state)))
        finally:
            plane.stop()
    report: admission_fuzz.FuzzReport = result["report"]
    print(f"workspaces generated: {args.workspaces} (seed {args.seed}), wall time {report.seconds:.1f} s")
    for outcome, count in sorted(report.outcomes.items(), key=lambda item: -item[1]):
        print(f"  {outcome:<60} {count:>5}")
    accepted = max(1, len(report.accepted))
    print(f"workspace reconciles per accepted workspace: {result['reconciles'] / accepted:.1f}")
    print(f"refusals naming no field: {len(report.refusals_without_field)}")
    print(f"machines for a workspace that cannot fit: {len(result['wrong'])}")
    print(f"not terminal by the deadline: {report.not_terminal}")
    print(f"operator failure: {result['failure']}")
    bad = report.refusals_without_field or result["wrong"] or report.not_terminal or result["failure"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
