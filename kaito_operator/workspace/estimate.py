"""How long node provisioning takes here, learnt from what this operator has seen.

For each instance type, the running median of the last ``window`` Machines' durations from
creation to Ready. The median, not the mean: one agent pool that waited for quota must not move
every later estimate. Kept in memory by the Workspace controller (a restarted operator starts
over and says "unknown" until it has seen a Machine become Ready); no observation, no estimate.
"""

from __future__ import annotations

import statistics
from collections import deque
from datetime import datetime, timedelta
from typing import Final

DEFAULT_WINDOW: Final = 15


class ProvisioningEstimator:
    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._window = window
        self._durations: dict[str, deque[float]] = {}

    def observe(self, instance_type: str, seconds: float) -> None:
        """One Machine of ``instance_type`` took ``seconds`` from creation to Ready."""
        if seconds < 0:
            return  # clocks disagree (a timestamp from another writer): not a duration
        self._durations.setdefault(instance_type, deque(maxlen=self._window)).append(seconds)

    def typical_seconds(self, instance_type: str) -> float | None:
        """The median of the observed durations, None when none has been observed."""
        durations = self._durations.get(instance_type)
        return statistics.median(durations) if durations else None

    def observations(self, instance_type: str) -> int:
        return len(self._durations.get(instance_type) or ())

    def expected_ready(self, instance_type: str, created: datetime) -> datetime | None:
        """When a Machine created at ``created`` should be Ready, None when unknown."""
        typical = self.typical_seconds(instance_type)
        return None if typical is None else created + timedelta(seconds=typical)
