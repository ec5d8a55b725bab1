"""Fixtures for the model-image and runtime tests: the tiny model, written once per session, and
the runtime serving it as a real subprocess."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from model_images.runtime.launcher import RuntimeProcess

# Limits the HTTP tests rely on: small enough that limit errors are easy to trigger.
MAX_INPUT_TOKENS = 64
MAX_TOTAL_TOKENS = 128
MAX_CONCURRENT_REQUESTS = 32
MAX_BATCH_SIZE = 16


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from model_images.runtime.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def runtime_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    """``python -m model_images.runtime serve`` on the tiny model, started once per session."""
    from model_images.runtime.launcher import start_runtime

    log_path = tmp_path_factory.mktemp("runtime-log") / "runtime.log"
    args = [
        "--max-input-tokens",
        str(MAX_INPUT_TOKENS),
        "--max-total-tokens",
        str(MAX_TOTAL_TOKENS),
        "--max-concurrent-requests",
        str(MAX_CONCURRENT_REQUESTS),
        "--max-batch-size",
        str(MAX_BATCH_SIZE),
        "--model-id",
        "tiny-llama",
    ]
    with start_runtime(tiny_model_dir, log_path=log_path, host="127.0.0.1", args=args) as runtime:
        yield runtime


@pytest.fixture(scope="session")
def runtime_url(runtime_process: RuntimeProcess) -> str:
    return runtime_process.url
