"""``kaito run`` as a child process, for drills and benchmarks: start it, SIGKILL it, stop it, read
its /readyz and /metrics, and its CPU time and peak memory from /proc (Linux).

Each start gets fresh loopback ports for /metrics and /healthz, so a restarted process never
collides with the one it replaces.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from sandbox.controlplane import die_with_parent, free_port

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


class OperatorProcess:
    """One ``kaito run`` process at a time, configured by environment only (KAITO_*, PROVISIONER_*, ...)."""

    def __init__(self, environment: dict[str, str], log: Path) -> None:
        self._environment = environment
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_port = 0
        self.health_port = 0
        self.starts = 0

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the operator process was never started")
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.alive:
            raise RuntimeError("the operator process is already running")
        self.metrics_port, self.health_port = free_port(), free_port()
        environment = {
            **os.environ,
            "KAITO_WEBHOOK_PORT": "0",
            **self._environment,
            "KAITO_METRICS_PORT": str(self.metrics_port),
            "KAITO_HEALTH_PORT": str(self.health_port),
            "KAITO_BIND_ADDRESS": "127.0.0.1",
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "kaito.cli", "run"],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # A SIGKILLed parent (benchmark, pytest) leaves no operator behind. The kernel signals
                # when the starting *thread* ends: start() runs on the caller's thread, not a worker's.
                preexec_fn=die_with_parent,  # noqa: PLW1509
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as after an OOM kill or a node failure."""
        if self.alive and self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def stop(self, grace: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll /readyz until it answers 200 (the process is starting: there is nothing to watch)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as http:
            while True:
                if not self.alive:
                    raise RuntimeError(f"the operator exited ({self.exit_code()}); see {self.log}")
                try:
                    async with http.get(f"http://127.0.0.1:{self.health_port}/readyz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the operator was not ready within {timeout:.0f}s; see {self.log}")
                await asyncio.sleep(0.2)

    async def metrics(self) -> str:
        async with (
            aiohttp.ClientSession(timeout=PROBE_TIMEOUT) as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as response,
        ):
            return await response.text()

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the live process."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_bytes(self) -> int:
        """The live process's peak resident set size (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
