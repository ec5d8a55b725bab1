"""`kaito sandbox up/down` as a user runs them: real processes, started and stopped from the shell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sandbox.controlplane import is_running, read_state

KAITO = [sys.executable, "-m", "kaito.cli"]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_exit_when_ready_leaves_it_running_until_down(tmp_path: Path) -> None:
    state = tmp_path / "cp"
    up = subprocess.run(
        [*KAITO, "sandbox", "up", "--profile", "apiserver", "--state-dir", str(state), "--exit-when-ready"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
        recorded = read_state(state)
        assert recorded is not None and [p["name"] for p in recorded["processes"]] == ["etcd", "kube-apiserver"]
        assert is_running(state)
    finally:
        down = subprocess.run(
            [*KAITO, "sandbox", "down", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert down.returncode == 0 and "stopped kube-apiserver, etcd" in down.stderr
    assert not state.exists()
    assert recorded is not None and not any(_alive(p["pid"]) for p in recorded["processes"])


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "fg"
    with subprocess.Popen(
        [*KAITO, "sandbox", "up", "--profile", "apiserver", "--state-dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline()  # blocks until the control plane is ready (or up fails)
            assert line.startswith("export KUBECONFIG="), process.stderr.read()
            recorded = read_state(state)
            assert recorded is not None
            # the wait below for every process to exit is vacuous unless there are processes to watch
            assert [p["name"] for p in recorded["processes"]] == ["etcd", "kube-apiserver"]
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                process.kill()
    deadline = time.monotonic() + 30
    while any(_alive(p["pid"]) for p in recorded["processes"]):
        assert time.monotonic() < deadline, "control-plane processes outlived `kaito sandbox up`"
        time.sleep(0.1)  # poll interval while waiting for processes to exit
    assert not state.exists()


def test_a_folder_the_sandbox_did_not_make_is_never_wiped(tmp_path: Path) -> None:
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    for verb in (["up", "--profile", "apiserver", "--exit-when-ready"], ["down"]):
        result = subprocess.run(
            [*KAITO, "sandbox", *verb, "--state-dir", str(precious)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert "is not a sandbox state folder" in result.stderr
    assert (precious / "notes.txt").read_text() == "keep me"
