"""Registers ``kaito run`` (the operator process). Flags override the KAITO_* environment."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    run = sub.add_parser("run", help="run the operator (workspace controller and GPU provisioner)")
    run.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else in-cluster)")
    run.add_argument("--metrics-port", type=int, help="port of /metrics (default: $KAITO_METRICS_PORT or 8080)")
    run.add_argument("--health-port", type=int, help="port of /healthz, /readyz (default: $KAITO_HEALTH_PORT or 8081)")
    run.add_argument(
        "--concurrency", type=int, help="parallel reconciles per controller (default: $KAITO_CONCURRENCY or 5)"
    )
    run.set_defaults(func=lazy("kaito.operator", "main"))
