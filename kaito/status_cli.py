"""Registers ``kaito status`` (where a Workspace is: phase, conditions, Machines, time left)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    status = sub.add_parser(
        "status",
        help="show where a Workspace is: phase, conditions, Machines and the time its nodes need",
        description=(
            "Without WORKSPACE: one line per Workspace of the namespace. With it: its phase, its "
            "conditions' messages, its Machines and, while nodes are provisioned, when they should be "
            "Ready (from what the operator has seen Machines of that instance type take). --watch "
            "redraws the view until the Workspace is Serving or Failed (or Ctrl-C)."
        ),
    )
    status.add_argument("workspace", nargs="?", help="Workspace name (default: all in the namespace)")
    status.add_argument("--namespace", "-n", default="default")
    status.add_argument("--watch", "-w", action="store_true", help="redraw as it changes")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch")
    status.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    status.add_argument("--context", help="kubeconfig context")
    status.set_defaults(func=lazy("kaito.status_view", "main"))
