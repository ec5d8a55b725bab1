"""Fuzz, bounded: generated Workspaces (valid and invalid, within the CRD schema and outside it) applied
to the real API server with the webhook registered and the operator (workspace controller + GPU
provisioner against the AKS simulator) running. The full run is benchmarks/admission_fuzz.py."""

from __future__ import annotations

import pytest

from gpu_provisioner.setup import ProvisionerFactory
from gpu_provisioner.testing import fast_provisioner
from kaito import admission_fuzz
from kaito.operator import DEFAULT_CONTROLLERS, ControllerFactory
from kaito.testing import admission_webhook
from tests.e2e.e2e_kit import EndToEnd

pytestmark = [pytest.mark.controlplane, pytest.mark.full]

EXAMPLES = 40
DEADLINE_S = 40.0
"""Within the suite's 60 s bound: generation and creation take a few seconds, clean-up the rest."""
MAX_COUNT = 2


async def test_generated_workspaces_are_refused_by_field_or_reach_a_terminal_state(e2e: EndToEnd) -> None:
    bodies = [
        admission_fuzz.place(body, index, e2e.namespace)
        for index, body in enumerate(admission_fuzz.generate(EXAMPLES, seed_value=20261201))
    ]
    provisioner = ProvisionerFactory(azure=e2e.azure(), settings=fast_provisioner(e2e.selector))
    factories: list[ControllerFactory] = [*DEFAULT_CONTROLLERS, provisioner]
    async with admission_webhook(e2e.api, e2e.namespace, factories, max_workspace_count=MAX_COUNT) as operator:
        report = await admission_fuzz.run(e2e.kube, e2e.namespace, bodies, deadline_s=DEADLINE_S)
        assert report.refusals_without_field == []
        assert report.not_terminal == [], report.outcomes
        assert await admission_fuzz.machines_that_cannot_fit(e2e.kube, e2e.namespace, report) == []
        assert operator.manager.failure is None
        reconciles = sum(
            operator.metrics.registry.get_sample_value(
                "kaito_reconcile_total", {"controller": "workspace", "result": r}
            )
            or 0
            for r in ("success", "requeue", "error", "permanent_error")
        )
    # Both kinds happen with this seed, so the checks above were exercised on each.
    assert report.outcomes["refused"] > 0 and len(report.accepted) > 0, report.outcomes
    # No hot loop: a key is reconciled on its own events and a bounded number of retries.
    assert reconciles <= 40 * len(report.accepted), (reconciles, report.outcomes)
