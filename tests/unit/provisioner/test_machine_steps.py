"""The Machine controller's steps against FakeCloud (a stateful in-memory cloud) and a FakeClock:
ownership, re-checks of permanent failures, the "pool disappeared" branch, liveness timeouts,
termination of a pool that is not ours, and the per-UID memory."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from gpu_provisioner import conditions as cond
from gpu_provisioner.cloudprovider import Instance, Operation
from gpu_provisioner.errors import ConfigurationError, QuotaExceeded, Transient
from gpu_provisioner.machine import liveness
from gpu_provisioner.machine.draft import Draft
from gpu_provisioner.machine.launch import ANNOTATION_FAILED_REQUEST, REASON_NOT_OWNED, Launch
from gpu_provisioner.machine.operations import ANNOTATION_OPERATION, OperationLedger
from gpu_provisioner.machine.registration import Registration
from gpu_provisioner.machine.termination import Termination
from gpu_provisioner.settings import ProvisionerSettings
from gpu_provisioner.testing import FakeCloud, a_machine
from kaito_operator.api import constants as c
from kaito_operator.runtime import FakeClock

START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CLUSTER = "kaito-cluster"
SETTINGS = ProvisionerSettings(poll_interval_s=5, launch_recheck_interval_s=600)


def wrong_resource_group() -> ConfigurationError:
    return ConfigurationError("Resource group 'wrong' could not be found.", code="ResourceGroupNotFound")


OURS = {"kaito-py-cluster": CLUSTER, "kaito-py-machine": "gpu1"}


def machine(name: str = "gpu1", uid: str = "uid-1") -> dict[str, Any]:
    m = a_machine(name, namespace_label="ns")
    m["metadata"].update(uid=uid, creationTimestamp=START.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return m


class Rig:
    def __init__(self, cloud: FakeCloud | None = None) -> None:
        self.clock = FakeClock(start=START)
        self.cloud = cloud or FakeCloud()
        self.operations = OperationLedger(self.clock, 600)
        self.launch = Launch(
            cloud=self.cloud, operations=self.operations, clock=self.clock, settings=SETTINGS, cluster_name=CLUSTER
        )
        self.machine = machine()

    async def reconcile(self) -> tuple[Draft, float | None]:
        draft = Draft(copy.deepcopy(self.machine))
        delay = await self.launch.reconcile(draft)
        self.written(draft)
        return draft, delay

    def written(self, draft: Draft) -> None:
        """What the controller's one write would leave on the Machine."""
        annotations = self.machine["metadata"].setdefault("annotations", {})
        for key, value in draft.annotations.items():
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        status = self.machine.setdefault("status", {})
        status["conditions"] = cond.apply_marks(status.get("conditions"), draft.marks, self.clock.utcnow())

    def launched(self) -> dict[str, Any]:
        found = cond.find(self.machine["status"]["conditions"], c.COND_MACHINE_LAUNCHED)
        assert found is not None
        return found


async def test_a_user_pool_of_the_machines_name_is_left_alone_and_the_machine_says_why() -> None:
    rig = Rig()
    rig.cloud.instances["gpu1"] = Instance(name="gpu1", vm_size="Standard_D4s_v3", provisioning_state="Succeeded")
    draft, _ = await rig.reconcile()
    launched = rig.launched()
    assert (launched["status"], launched["reason"]) == ("False", REASON_NOT_OWNED)
    assert "agent pool gpu1 exists and was not created by kaito" in launched["message"]
    assert [e[:2] for e in draft.events] == [("Warning", REASON_NOT_OWNED)]
    assert rig.cloud.calls_of("create") == [] and rig.cloud.calls_of("delete") == []
    await rig.reconcile()  # looked at again later: the same condition, no second Event
    assert rig.cloud.calls_of("create") == []


async def test_a_failed_user_pool_of_that_name_is_not_repaired() -> None:
    rig = Rig()
    rig.cloud.instances["gpu1"] = Instance(name="gpu1", vm_size="Standard_NC12s_v3", provisioning_state="Failed")
    await rig.reconcile()
    assert rig.cloud.calls_of("create") == []
    assert rig.cloud.instances["gpu1"].tags == {}


async def test_a_failed_pool_of_ours_is_repaired_by_a_put() -> None:
    rig = Rig()
    rig.cloud.instances["gpu1"] = Instance("gpu1", "Standard_NC12s_v3", "Failed", tags=OURS)
    await rig.reconcile()
    assert len(rig.cloud.calls_of("create")) == 1


async def test_a_permanent_failure_is_sent_again_once_per_recheck_interval() -> None:
    rig = Rig()
    rig.cloud.fail_next("create", QuotaExceeded("exceeding approved quota", code="QuotaExceeded"))
    _, delay = await rig.reconcile()
    assert rig.launched()["status"] == "False" and delay == SETTINGS.launch_recheck_interval_s
    for _ in range(3):  # wake-ups before the interval: no Azure PUT
        rig.clock.step(60)
        _, delay = await rig.reconcile()
    assert len(rig.cloud.calls_of("create")) == 1
    assert delay is not None and 0 < delay <= SETTINGS.launch_recheck_interval_s - 180
    rig.clock.step(delay)
    await rig.reconcile()  # the quota was raised meanwhile: the create goes through
    assert len(rig.cloud.calls_of("create")) == 2
    assert rig.launched()["status"] == "Unknown"


async def test_removing_the_failed_request_annotation_retries_at_once() -> None:
    rig = Rig()
    rig.cloud.fail_next("create", QuotaExceeded("quota", code="QuotaExceeded"))
    await rig.reconcile()
    assert json.loads(rig.machine["metadata"]["annotations"][ANNOTATION_FAILED_REQUEST])["at"]
    del rig.machine["metadata"]["annotations"][ANNOTATION_FAILED_REQUEST]
    await rig.reconcile()
    assert len(rig.cloud.calls_of("create")) == 2


async def test_a_pool_that_disappears_during_its_creation_is_created_again() -> None:
    rig = Rig()
    await rig.reconcile()
    assert ANNOTATION_OPERATION in rig.machine["metadata"]["annotations"]
    rig.cloud._running.clear()
    del rig.cloud.instances["gpu1"]  # someone deleted it behind our back
    draft, delay = await rig.reconcile()
    assert "disappeared during its creation" in rig.launched()["message"]
    assert ANNOTATION_OPERATION not in rig.machine["metadata"]["annotations"]
    assert draft.launch_outcome == "retrying" and delay is not None
    await rig.reconcile()
    assert len(rig.cloud.calls_of("create")) == 2


async def test_a_configuration_error_is_reported_not_taken_for_a_missing_pool() -> None:
    rig = Rig()
    rig.cloud.fail_next("get", wrong_resource_group())
    draft, delay = await rig.reconcile()
    assert draft.launch_outcome == "configuration"
    assert "ResourceGroupNotFound" in rig.launched()["message"]
    assert rig.cloud.calls_of("create") == []
    assert delay == SETTINGS.auth_retry_interval_s


def test_a_node_that_never_registers_expires_after_the_registration_timeout() -> None:
    clock = FakeClock(start=START)
    m = machine()
    m["status"] = {"conditions": cond.apply_marks([], {c.COND_MACHINE_LAUNCHED: cond.Mark.true()}, clock.utcnow())}
    draft = Draft(m)
    assert liveness.check(draft, now=clock.utcnow(), settings=SETTINGS) == SETTINGS.registration_timeout_s
    clock.step(SETTINGS.registration_timeout_s - 1)
    assert liveness.check(draft, now=clock.utcnow(), settings=SETTINGS) == 1
    clock.step(1)
    verdict = liveness.check(draft, now=clock.utcnow(), settings=SETTINGS)
    assert isinstance(verdict, liveness.Expired) and verdict.reason == liveness.REASON_REGISTRATION_TIMEOUT


def test_only_a_launch_that_keeps_failing_transiently_expires() -> None:
    later = datetime.fromtimestamp(START.timestamp() + SETTINGS.launch_timeout_s, UTC)
    for outcome in ("permanent", "configuration", "not_owned", "in_progress"):
        draft = Draft(machine(), launch_outcome=outcome)
        assert liveness.check(draft, now=later, settings=SETTINGS) is None
    draft = Draft(machine(), launch_outcome="retrying")
    verdict = liveness.check(draft, now=later, settings=SETTINGS)
    assert isinstance(verdict, liveness.Expired) and verdict.reason == liveness.REASON_LAUNCH_TIMEOUT


class _Store:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes

    def by_index(self, index: str, value: str) -> list[dict[str, Any]]:
        return self.nodes


class _Nodes:
    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.store = _Store(nodes)


def termination(cloud: FakeCloud, nodes: list[dict[str, Any]]) -> tuple[Termination, OperationLedger]:
    clock = FakeClock(start=START)
    operations = OperationLedger(clock, 600)
    registration = Registration(client=None, nodes=_Nodes(nodes), settings=SETTINGS)  # type: ignore[arg-type]
    return (
        Termination(
            client=None,  # type: ignore[arg-type]
            registration=registration,
            cloud=cloud,
            operations=operations,
            clock=clock,
            settings=SETTINGS,
            cluster_name=CLUSTER,
        ),
        operations,
    )


async def test_deleting_a_machine_never_touches_a_pool_or_node_that_is_not_ours() -> None:
    cloud = FakeCloud()
    cloud.instances["gpu1"] = Instance(name="gpu1", vm_size="Standard_D4s_v3", provisioning_state="Succeeded")
    user_node = {"metadata": {"name": "aks-gpu1-1-vmss000000", "labels": {"agentpool": "gpu1"}}}
    step, _ = termination(cloud, [user_node])  # a client of None: any Kubernetes write would fail
    assert await step.reconcile(Draft(machine())) is True
    assert cloud.calls_of("delete") == [] and "gpu1" in cloud.instances


async def test_a_configuration_error_keeps_the_finalizer_of_a_launched_machine() -> None:
    cloud = FakeCloud()
    cloud.fail_next("get", wrong_resource_group())
    m = machine()
    m["status"] = {"conditions": cond.apply_marks([], {c.COND_MACHINE_LAUNCHED: cond.Mark.true()}, START)}
    step, _ = termination(cloud, [])
    draft = Draft(m)
    outcome = await step.reconcile(draft)
    assert outcome == SETTINGS.auth_retry_interval_s
    assert [e[1] for e in draft.events] == ["ConfigurationError"]


async def test_a_pool_of_ours_is_deleted_and_followed_to_its_end() -> None:
    cloud = FakeCloud()
    cloud.instances["gpu1"] = Instance("gpu1", "Standard_NC12s_v3", "Succeeded", tags=OURS)
    step, operations = termination(cloud, [])
    draft = Draft(machine())
    assert await step.reconcile(draft) == SETTINGS.poll_interval_s
    assert len(cloud.calls_of("delete")) == 1 and len(operations) == 1
    deleting = machine()
    deleting["metadata"]["annotations"] = {ANNOTATION_OPERATION: draft.annotations[ANNOTATION_OPERATION] or ""}
    draft = Draft(deleting)
    assert await step.reconcile(draft) is True
    assert "gpu1" not in cloud.instances


def test_the_started_operations_memory_is_emptied_when_machines_go() -> None:
    clock = FakeClock(start=START)
    ledger = OperationLedger(clock, 600)
    for index in range(3):
        ledger.save(Draft(machine(f"gpu{index}", uid=f"u{index}")), Operation("create", f"gpu{index}", "t"))
    assert len(ledger) == 3
    ledger.release(uid="u0")
    ledger.release(name="gpu1")
    ledger.release(name="gpu2")
    assert len(ledger) == 0


def test_a_machine_that_registered_once_is_never_expired_by_the_registration_timeout() -> None:
    # Days after launch, an AKS upgrade's surge node makes the pool have two nodes (or auto-repair
    # re-images the node): MachineRegistered leaves True, but the Machine must not be deleted.
    clock = FakeClock(start=START)
    m = machine()
    m["status"] = {
        "nodeName": "aks-gpu1-12345678-vmss000000",
        "conditions": cond.apply_marks([], {c.COND_MACHINE_LAUNCHED: cond.Mark.true()}, clock.utcnow()),
    }
    clock.step(3 * 24 * 3600)
    for mark in (
        cond.Mark.false(cond.REASON_MULTIPLE_NODES, "Invariant violated, machine matched multiple nodes"),
        cond.Mark.false(cond.REASON_NODE_NOT_FOUND, "Node aks-gpu1-12345678-vmss000000 no longer exists"),
    ):
        draft = Draft(copy.deepcopy(m))
        draft.mark(c.COND_MACHINE_REGISTERED, mark)
        assert liveness.check(draft, now=clock.utcnow(), settings=SETTINGS) is None


async def test_the_launch_timeout_counts_from_the_start_of_the_current_run_of_retries() -> None:
    # An hour on quota (permanent: re-checked, never timed out), then one 429 on the re-check: the
    # Machine gets a whole launch timeout from that 429 on, not "an hour since creation".
    rig = Rig()
    rig.cloud.fail_next("create", QuotaExceeded("exceeding approved quota", code="QuotaExceeded"))
    await rig.reconcile()
    rig.clock.step(3600)
    rig.cloud.fail_next("create", Transient("Too Many Requests", code="TooManyRequests"))
    draft, _ = await rig.reconcile()
    assert draft.launch_outcome == "retrying"
    assert liveness.check(draft, now=rig.clock.utcnow(), settings=SETTINGS) == SETTINGS.launch_timeout_s
    rig.clock.step(SETTINGS.launch_timeout_s)
    rig.cloud.fail_next("create", Transient("Too Many Requests", code="TooManyRequests"))
    draft, _ = await rig.reconcile()
    verdict = liveness.check(draft, now=rig.clock.utcnow(), settings=SETTINGS)
    assert isinstance(verdict, liveness.Expired) and verdict.reason == liveness.REASON_LAUNCH_TIMEOUT


async def test_a_configuration_error_keeps_the_finalizer_once_a_create_was_accepted() -> None:
    # The PUT was accepted, its operation later failed (QuotaExceeded): launch clears the operation,
    # but a Failed pool with our tags may stand, so the Machine cannot be released unchecked.
    rig = Rig()
    await rig.reconcile()
    rig.cloud.fail_operation("gpu1", QuotaExceeded("exceeding approved quota", code="QuotaExceeded"))
    await rig.reconcile()
    assert ANNOTATION_OPERATION not in rig.machine["metadata"]["annotations"]
    assert rig.cloud.instances["gpu1"].provisioning_state == "Failed"
    rig.machine["metadata"]["annotations"].pop(ANNOTATION_FAILED_REQUEST)  # the user asked for a retry now
    rig.cloud.fail_next("get", wrong_resource_group())
    step, _ = termination(rig.cloud, [])
    draft = Draft(copy.deepcopy(rig.machine))
    assert await step.reconcile(draft) == SETTINGS.auth_retry_interval_s
    assert [e[1] for e in draft.events] == ["ConfigurationError"]


async def test_a_configuration_error_releases_a_machine_azure_never_accepted_a_create_for() -> None:
    rig = Rig()
    rig.cloud.fail_next("get", wrong_resource_group())
    await rig.reconcile()
    rig.cloud.fail_next("get", wrong_resource_group())
    step, _ = termination(rig.cloud, [])
    assert await step.reconcile(Draft(copy.deepcopy(rig.machine))) is True


async def test_a_delete_operation_azure_no_longer_knows_releases_nothing_while_the_pool_stands() -> None:
    # An expired operation id reads as "done"; the pool itself decides: it stands, so it is deleted.
    cloud = FakeCloud()
    cloud.instances["gpu1"] = Instance("gpu1", "Standard_NC12s_v3", "Succeeded", tags=OURS)
    step, _ = termination(cloud, [])
    m = machine()
    m["metadata"]["annotations"] = {ANNOTATION_OPERATION: json.dumps({"kind": "delete", "token": "fake-expired"})}
    draft = Draft(m)
    assert await step.reconcile(draft) == SETTINGS.poll_interval_s
    assert len(cloud.calls_of("delete")) == 1
    assert json.loads(draft.annotations[ANNOTATION_OPERATION] or "")["token"] != "fake-expired"
