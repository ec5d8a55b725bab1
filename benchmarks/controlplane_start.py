"""Warm start time of each control-plane profile: the median of 5 starts (binaries already built).

Run: .venv/bin/python benchmarks/controlplane_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sandbox.binaries import ensure_binaries
from sandbox.controlplane import PROFILES, ControlPlane


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binaries = ensure_binaries()
    print(f"{'profile':<10} {'median s':>9} {'min s':>7} {'max s':>7}  runs")
    for profile in PROFILES:
        timings = []
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory(prefix=f"kaito-bench-{profile}-") as state:
                plane = ControlPlane(Path(state), profile=profile, binaries=binaries)
                started = time.monotonic()
                plane.start()
                timings.append(time.monotonic() - started)
                plane.stop()
        print(
            f"{profile:<10} {statistics.median(timings):>9.2f} {min(timings):>7.2f} {max(timings):>7.2f}"
            f"  {', '.join(f'{t:.2f}' for t in timings)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
