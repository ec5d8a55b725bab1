"""The runtime process as a container runs it: model written by the CLI, served, stopped by SIGTERM
while a request is streaming (the request finishes, the process exits 0)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from model_images.runtime.launcher import RuntimeProcess, start_runtime

pytestmark = pytest.mark.runtime


@pytest.fixture
def cli_written_model(tmp_path: Path) -> Path:
    model_dir = tmp_path / "model"
    written = subprocess.run(
        [sys.executable, "-m", "model_images.runtime", "tiny-model", str(model_dir), "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    assert (model_dir / "model.safetensors").stat().st_size > 0
    return model_dir


@pytest.fixture
def runtime(cli_written_model: Path, tmp_path: Path) -> Iterator[RuntimeProcess]:
    with start_runtime(cli_written_model, log_path=tmp_path / "runtime.log") as process:
        yield process


async def test_sigterm_lets_the_streaming_request_finish(runtime: RuntimeProcess) -> None:
    # 600 tokens take seconds on a CPU, so SIGTERM lands while the stream is running.
    body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 600, "details": True}}
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(f"{runtime.url}/generate_stream", json=body) as response:
            first = await response.content.readline()
            assert first.startswith(b"data:")
            runtime.process.send_signal(signal.SIGTERM)
            events = [line for line in (await response.content.read()).split(b"\n") if line.startswith(b"data:")]
        last = json.loads(events[-1].removeprefix(b"data:"))
        assert last["generated_text"] is not None, last
        assert last["details"]["generated_tokens"] == len(events) + 1
    assert await asyncio.to_thread(runtime.process.wait, 60) == 0
    assert "stopping: finishing in-flight requests" in runtime.log_tail()
