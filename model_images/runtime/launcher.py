"""Starts the runtime as a real subprocess on a free port and waits until it is healthy.

For tests, the sandbox and scripts: ``with start_runtime(model_dir) as runtime: ... runtime.url``.
The process is stopped with SIGTERM (then SIGKILL) when the context ends.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class RuntimeStartError(Exception):
    """The runtime exited or did not become healthy in time; the message has its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RuntimeProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        return self.process.returncode


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False


def wait_until_healthy(runtime: RuntimeProcess, timeout: float, poll_interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not _healthy(runtime.url):
        if runtime.process.poll() is not None:
            raise RuntimeStartError(
                f"the runtime exited with status {runtime.process.returncode}:\n{runtime.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeStartError(f"the runtime was not healthy within {timeout} s:\n{runtime.log_tail()}")
        time.sleep(poll_interval)


@contextlib.contextmanager
def start_runtime(
    model_dir: str | Path,
    *,
    log_path: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
    startup_timeout: float = 180.0,
) -> Iterator[RuntimeProcess]:
    """Run ``python -m model_images.runtime serve`` for ``model_dir`` with extra ``args`` (e.g.
    ``["--max-batch-size", "8"]``); yield once ``/health`` answers 200, stop it on exit."""
    chosen_port = port or free_port(host)
    command = [
        sys.executable,
        "-m",
        "model_images.runtime",
        "serve",
        "--model",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(chosen_port),
        *args,
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
    # A server on every interface is still called on loopback.
    url_host = "127.0.0.1" if host == "0.0.0.0" else host
    runtime = RuntimeProcess(url=f"http://{url_host}:{chosen_port}", process=process, log_path=log_path)
    try:
        wait_until_healthy(runtime, startup_timeout)
        yield runtime
    finally:
        runtime.stop()
