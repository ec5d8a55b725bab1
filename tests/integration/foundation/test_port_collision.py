"""A port taken between choosing it and binding it does not fail the start: the control plane starts
again with new ports."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import controlplane
from sandbox.controlplane import ControlPlane


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process holds, listening, for the whole test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_component_whose_port_was_taken_meanwhile_gets_a_new_port(
    tmp_path: Path, taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_free_port = controlplane.free_port
    handed_out: list[int] = []

    def first_choice_already_taken() -> int:
        # The first port chosen (etcd's) is one somebody else bound after it was chosen.
        port = taken_port if not handed_out else real_free_port()
        handed_out.append(port)
        return port

    monkeypatch.setattr(controlplane, "free_port", first_choice_already_taken)
    progress = io.StringIO()
    plane = ControlPlane(tmp_path / "cp", profile="apiserver", out=progress)
    with plane:
        assert plane.ports["etcd"] != taken_port
        assert handed_out.count(taken_port) == 1, "the taken port was chosen once, then replaced"
        assert "etcd could not bind its port" in progress.getvalue()
