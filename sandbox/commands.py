"""What ``kaito sandbox up|down|build`` do."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import cast

from kaito_operator.api.crds import all_crds
from sandbox.binaries import BinaryError, ensure_binaries
from sandbox.controlplane import ControlPlane, ControlPlaneError, Profile, default_state_dir, stop_from_state
from sandbox.kube import api_client_from_kubeconfig, apply_objects, install_crds, load_manifests


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir).resolve() if args.state_dir else default_state_dir()


async def _install(plane: ControlPlane, manifests: list[Path]) -> None:
    async with await api_client_from_kubeconfig(plane.kubeconfig) as api:
        await install_crds(api, all_crds().values())
        for manifest in manifests:
            for obj in await apply_objects(api, load_manifests(manifest)):
                meta = obj["metadata"]
                where = f" in {meta['namespace']}" if meta.get("namespace") else ""
                print(f"applied {obj['kind']} {meta['name']}{where}", file=sys.stderr)


def up(args: argparse.Namespace) -> int:
    manifests = [Path(path) for path in args.apply]
    for manifest in manifests:
        if not manifest.is_file():
            print(f"error: --apply {manifest}: no such file", file=sys.stderr)
            return 2
    plane = ControlPlane(
        _state_dir(args), profile=cast(Profile, args.profile), die_with_parent=not args.exit_when_ready
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        plane.start(timeout=args.timeout)
        asyncio.run(_install(plane, manifests))
    except (ControlPlaneError, BinaryError, ValueError, TimeoutError) as error:
        plane.stop()
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"control plane ({args.profile}) is ready; logs in {plane.log_dir}", file=sys.stderr)
    print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
    if args.exit_when_ready:
        print(f"stop it with: kaito sandbox down --state-dir {plane.state_dir}", file=sys.stderr)
        return 0
    print("press Ctrl-C to stop", file=sys.stderr)
    try:
        while not stop.wait(1.0):
            dead = [p for p in plane.processes if p.process is not None and p.process.poll() is not None]
            if dead:
                proc = dead[0]
                print(f"error: {proc.name} exited; last lines of {proc.log}:\n{proc.tail()}", file=sys.stderr)
                return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        plane.stop()
        stop_from_state(plane.state_dir)
        print("control plane stopped", file=sys.stderr)


def down(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    stopped = stop_from_state(state_dir)
    if stopped:
        print(f"stopped {', '.join(stopped)}; removed {state_dir}", file=sys.stderr)
    else:
        print(f"nothing was running from {state_dir}; removed it", file=sys.stderr)
    return 0


def build(args: argparse.Namespace) -> int:
    del args
    try:
        binaries = ensure_binaries()
    except BinaryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, path in vars(binaries).items():
        print(f"{name.replace('_', '-')}: {path}")
    return 0
