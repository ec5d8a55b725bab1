"""Registers ``kaito run`` (the operator process)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    run = sub.add_parser("run", help="run the operator (workspace controller and GPU provisioner)")
    run.set_defaults(func=lazy("kaito_operator.manager", "main"))
