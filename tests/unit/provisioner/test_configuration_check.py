"""The configuration check keeps one verdict for one refusal: Entra ID's per-request trace parts
(the shape of its error_description: "... Trace ID: <uuid> Correlation ID: <uuid> Timestamp:
<date>") must not make every check look like a new problem."""

from __future__ import annotations

import uuid

from gpu_provisioner.configuration_check import CHECK_KEY, ConfigurationCheck
from gpu_provisioner.errors import Unauthorized
from gpu_provisioner.settings import ProvisionerSettings
from gpu_provisioner.testing import FakeCloud


def refusal(timestamp: str) -> Unauthorized:
    return Unauthorized(
        "Entra ID refused the workload identity: invalid_client: AADSTS700016: Application with identifier "
        "'11111111-2222-3333-4444-555555555555' was not found in the directory 'contoso'. "
        f"Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: {timestamp}",
        code="invalid_client",
    )


async def test_the_same_refusal_with_new_trace_ids_is_the_same_verdict() -> None:
    cloud = FakeCloud()
    check = ConfigurationCheck(cloud=cloud, settings=ProvisionerSettings(), cluster="kaito-cluster")
    verdicts = []
    for timestamp in ("2025-03-01 12:00:00Z", "2025-03-01 12:05:00.1234567Z"):
        cloud.fail_next("list", refusal(timestamp))
        await check.reconcile(CHECK_KEY)
        verdicts.append(check.problem)
    assert verdicts[0] is not None and verdicts[0] == verdicts[1]
    assert "AADSTS700016" in verdicts[0] and "11111111-2222-3333-4444-555555555555" in verdicts[0]
    assert "Trace ID" not in verdicts[0] and "Correlation ID" not in verdicts[0] and "2025-03-01" not in verdicts[0]
