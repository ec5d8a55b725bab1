"""End to end, with the operator as a real process: SIGKILLed during a 20-second agent-pool create
and started again, it resumes the create (from the continuation token on the Machine, or by finding
the pool) instead of making a second pool, and the Workspace becomes Ready."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import WORKSPACE
from kaito_operator.testing import eventually, is_true
from tests.e2e.e2e_kit import EndToEnd, OperatorProcess, falcon_7b

pytestmark = [pytest.mark.controlplane, pytest.mark.full]


async def test_an_operator_killed_during_a_long_create_resumes_it_and_makes_exactly_one_pool(
    e2e: EndToEnd, tmp_path: Path
) -> None:
    simulator = e2e.simulator
    simulator.config.provisioning_delay_s = 20
    settings = {
        "PROVISIONER_MACHINE_SELECTOR": e2e.selector,
        "PROVISIONER_POLL_INTERVAL_S": "0.5",
        "PROVISIONER_ARM_POLLING_INTERVAL_S": "0.1",
        "PROVISIONER_GC_INTERVAL_S": "2",
        "PROVISIONER_GC_GRACE_PERIOD_S": "1",
    }
    operator = OperatorProcess(e2e, settings, tmp_path / "operator.log")
    operator.start()
    try:
        await e2e.kube.create(WORKSPACE, falcon_7b(e2e.namespace))

        async def pool_accepted() -> str | None:
            accepted = [r.pool for r in simulator.requests_for("PUT") if r.status == 201]
            return accepted[0] if accepted else None

        pool = await eventually(pool_accepted, timeout=60, what=f"the agent pool's PUT; log:\n{operator.log_text()}")
        operator.kill()
        create = simulator.cluster.operations[simulator.cluster.pools[pool].operation_id or ""]
        assert not create.finished, "killed while the create was still running"

        operator.start()
        ready = await e2e.wait_workspace(
            "workspace-falcon-7b", is_true(c.COND_WORKSPACE_READY), timeout=120, what="WorkspaceReady after restart"
        )
        assert ready is not None
        assert list(simulator.cluster.pools) == [pool], "exactly one agent pool"
        assert [r.status for r in simulator.requests_for("PUT")] == [201], "the create was resumed, not repeated"
        assert len(simulator.requests_for("TOKEN")) >= 2, "each process got its own token"

        await e2e.delete_workspace("workspace-falcon-7b")
        assert not simulator.cluster.pools
    finally:
        code = await operator.stop()
        assert code == 0, f"operator exit code {code}; log:\n{operator.log_text()[-4000:]}"
