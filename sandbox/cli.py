"""``kaito sandbox``: build the control-plane binaries, bring a local control plane up, take it down.

Import-light on purpose (argparse only): the work happens in ``sandbox.commands``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    sandbox = sub.add_parser("sandbox", help="a local control plane (etcd, kube-apiserver, ..., kwok)")
    verbs = sandbox.add_subparsers(dest="sandbox_command", required=True, metavar="VERB")

    up = verbs.add_parser("up", help="start a control plane and print the KUBECONFIG line")
    up.add_argument("--profile", choices=["apiserver", "full"], default="full", help="default: full")
    up.add_argument("--state-dir", help="where PKI, kubeconfig, data and logs go")
    up.add_argument(
        "--exit-when-ready",
        action="store_true",
        help="return once it serves and leave the processes running (stop them with `kaito sandbox down`)",
    )
    up.add_argument(
        "--apply",
        action="append",
        default=[],
        metavar="FILE",
        help="a YAML manifest to apply once the CRDs are served (repeatable)",
    )
    up.add_argument(
        "--aks",
        action="store_true",
        help="also start the AKS + Entra ID simulator (needs --profile full) and write <state-dir>/operator.env",
    )
    up.add_argument(
        "--aks-provisioning-delay",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long an agent-pool create takes in the simulator (default 2)",
    )
    up.add_argument(
        "--aks-fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault to inject, e.g. \'{"target": "PUT", "status": 429, "code": "TooManyRequests", '
        '"retry_after": 1}\' (repeatable; see docs/aks-simulator.md)',
    )
    up.add_argument(
        "--operator",
        action="store_true",
        help="also run the operator (`kaito run`) against it, provisioning through the simulator (needs --aks)",
    )
    up.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve preset pods for real: the CPU runtime with a small model, one network namespace per pod "
        "when root (default: on with --operator)",
    )
    up.add_argument(
        "--wait-ready",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="after --apply, wait up to this long for every applied Workspace to be WorkspaceReady",
    )
    up.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for readiness (default 180)")
    up.set_defaults(func=lazy("sandbox.commands", "up"))

    down = verbs.add_parser("down", help="stop a control plane started by `up` and remove its state")
    down.add_argument("--state-dir", help="the --state-dir given to `up`")
    down.set_defaults(func=lazy("sandbox.commands", "down"))

    build = verbs.add_parser("build", help="build (or find in the cache) every control-plane binary")
    build.set_defaults(func=lazy("sandbox.commands", "build"))
