"""The runtime benchmarks are importable and well-formed; they are not run here (too slow), except
the GPU benchmark's refusal to run without CUDA."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.runtime

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_benchmark_measures_concurrency_1_4_16_against_the_baseline() -> None:
    module = load("runtime")
    assert module.CONCURRENCY_LEVELS == (1, 4, 16)
    assert callable(module.baseline_server) and callable(module.main)


def test_gpu_benchmark_exits_clearly_without_cuda() -> None:
    module = load("runtime_gpu")
    assert module.CONCURRENCY_LEVELS == (1, 32)
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "runtime_gpu.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "CUDA is not available" in result.stdout
