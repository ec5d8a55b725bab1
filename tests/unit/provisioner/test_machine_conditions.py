"""Machine conditions: each step's mark, Ready derived with knative semantics (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gpu_provisioner import conditions as cond

T0 = datetime(2024, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
LAUNCHED, REGISTERED, INITIALIZED, READY = "MachineLaunched", "MachineRegistered", "MachineInitialized", "Ready"


def by_type(conditions: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {c["type"]: c for c in conditions}


def test_a_new_machine_is_launching_and_ready_unknown_mirrors_it() -> None:
    result = by_type(
        cond.apply_marks(
            None,
            {
                LAUNCHED: cond.Mark.unknown(cond.REASON_LAUNCHING, "creating agent pool ws1"),
                REGISTERED: cond.Mark.unknown(cond.REASON_NOT_LAUNCHED, "Machine is not launched"),
                INITIALIZED: cond.Mark.unknown(cond.REASON_NOT_LAUNCHED, "Machine is not launched"),
            },
            T0,
        )
    )
    assert result[READY]["status"] == "Unknown"
    assert result[READY]["reason"] == cond.REASON_LAUNCHING
    assert result[READY]["message"] == "creating agent pool ws1"
    assert all(c["lastTransitionTime"] == "2024-01-01T00:00:00Z" for c in result.values())


def test_a_false_dependent_makes_ready_false_with_its_reason_and_message() -> None:
    result = by_type(
        cond.apply_marks(
            None,
            {
                LAUNCHED: cond.Mark.false(cond.REASON_LAUNCH_FAILED, "QuotaExceeded: quota of NCSv3 cores"),
                REGISTERED: cond.Mark.unknown(cond.REASON_NOT_LAUNCHED, "Machine is not launched"),
            },
            T0,
        )
    )
    assert result[READY] | {} == {
        "type": READY,
        "status": "False",
        "reason": cond.REASON_LAUNCH_FAILED,
        "message": "QuotaExceeded: quota of NCSv3 cores",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
    }


def test_the_first_false_dependent_in_lifecycle_order_wins() -> None:
    result = by_type(
        cond.apply_marks(
            None,
            {
                LAUNCHED: cond.Mark.true(),
                REGISTERED: cond.Mark.false(cond.REASON_NODE_NOT_FOUND, "node gone"),
                INITIALIZED: cond.Mark.false(cond.REASON_NODE_NOT_READY, "Node status is NotReady"),
            },
            T0,
        )
    )
    assert result[READY]["reason"] == cond.REASON_NODE_NOT_FOUND


def test_ready_is_true_when_launched_registered_and_initialized() -> None:
    all_true = {name: cond.Mark.true() for name in (LAUNCHED, REGISTERED, INITIALIZED)}
    result = by_type(cond.apply_marks(None, all_true, T0))
    assert result[READY]["status"] == "True"
    assert "reason" not in result[READY] and "message" not in result[READY]


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = cond.apply_marks(None, {LAUNCHED: cond.Mark.unknown(cond.REASON_LAUNCHING, "creating")}, T0)
    same = cond.apply_marks(first, {LAUNCHED: cond.Mark.unknown(cond.REASON_LAUNCHING, "still creating")}, T1)
    assert by_type(same)[LAUNCHED]["lastTransitionTime"] == "2024-01-01T00:00:00Z"
    assert by_type(same)[LAUNCHED]["message"] == "still creating"
    launched = cond.apply_marks(same, {LAUNCHED: cond.Mark.true()}, T1)
    assert by_type(launched)[LAUNCHED]["lastTransitionTime"] == "2024-01-01T00:01:00Z"


def test_unmarked_dependents_keep_their_state_and_foreign_conditions_survive() -> None:
    existing = [
        {"type": LAUNCHED, "status": "True", "lastTransitionTime": "2023-12-31T00:00:00Z"},
        {"type": "MachineDrifted", "status": "False", "reason": "NotDrifted"},
    ]
    result = cond.apply_marks(existing, {REGISTERED: cond.Mark.true()}, T0)
    types = [c["type"] for c in result]
    assert types == [LAUNCHED, REGISTERED, INITIALIZED, READY, "MachineDrifted"]
    assert by_type(result)[LAUNCHED]["lastTransitionTime"] == "2023-12-31T00:00:00Z"


def test_applying_the_same_marks_twice_changes_nothing() -> None:
    marks = {LAUNCHED: cond.Mark.true(), REGISTERED: cond.Mark.unknown(cond.REASON_NODE_NOT_FOUND, "waiting")}
    once = cond.apply_marks(None, marks, T0)
    assert cond.apply_marks(once, marks, T1) == once


def test_long_azure_messages_are_trimmed_to_800_characters_like_upstream() -> None:
    mark = cond.Mark.false(cond.REASON_LAUNCH_FAILED, "x" * 2000)
    assert len(mark.message) == 803 and mark.message.endswith("...")
    assert cond.trim("short") == "short"
