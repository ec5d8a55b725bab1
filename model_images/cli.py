"""Registers ``kaito runtime``, ``kaito images`` and ``kaito generate``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    del sub, lazy
