"""The provisioning estimator: the median of what was observed per instance type, or nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kaito_operator.workspace.estimate import ProvisioningEstimator
from kaito_operator.workspace.machines import provisioning_seconds

CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def test_nothing_observed_means_no_estimate_not_a_guess() -> None:
    estimator = ProvisioningEstimator()
    assert estimator.typical_seconds("Standard_NC12s_v3") is None
    assert estimator.expected_ready("Standard_NC12s_v3", CREATED) is None


def test_one_slow_pool_does_not_move_the_estimate_much() -> None:
    estimator = ProvisioningEstimator()
    # Two pools took 4 and 5 minutes; one waited 40 minutes for quota.
    for seconds in (240.0, 300.0, 2400.0):
        estimator.observe("Standard_NC12s_v3", seconds)
    # The middle one of the three: five minutes after creation.
    assert estimator.expected_ready("Standard_NC12s_v3", CREATED) == datetime(2024, 5, 1, 12, 5, 0, tzinfo=UTC)


def test_instance_types_are_estimated_apart() -> None:
    estimator = ProvisioningEstimator()
    estimator.observe("Standard_NC12s_v3", 120.0)
    assert estimator.typical_seconds("Standard_NC96ads_A100_v4") is None
    assert estimator.typical_seconds("Standard_NC12s_v3") == 120.0


def test_old_observations_leave_the_window() -> None:
    estimator = ProvisioningEstimator(window=3)
    for seconds in (600.0, 600.0, 600.0, 60.0, 60.0, 60.0):
        estimator.observe("Standard_NC12s_v3", seconds)
    # Only the last three (all one minute) count once three newer ones arrived.
    assert estimator.typical_seconds("Standard_NC12s_v3") == 60.0
    assert estimator.observations("Standard_NC12s_v3") == 3


def test_a_negative_duration_is_not_an_observation() -> None:
    estimator = ProvisioningEstimator()
    estimator.observe("Standard_NC12s_v3", -5.0)
    assert estimator.typical_seconds("Standard_NC12s_v3") is None


def test_a_window_below_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="window"):
        ProvisioningEstimator(window=0)


def test_a_machines_duration_runs_from_creation_to_its_ready_transition() -> None:
    machine: dict[str, Any] = {
        "metadata": {"name": "ws1a2b3", "creationTimestamp": "2024-05-01T12:00:00Z"},
        "status": {
            "conditions": [
                {"type": "MachineLaunched", "status": "True", "lastTransitionTime": "2024-05-01T12:02:00Z"},
                {"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:04:30Z"},
            ]
        },
    }
    assert provisioning_seconds(machine) == 270.0
    machine["status"]["conditions"][1]["status"] = "False"
    assert provisioning_seconds(machine) is None
