"""``python -m model_images.runtime serve|tiny-model ...``: the runtime without the ``kaito`` CLI,
which is what containers run (it imports nothing of the operator)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from model_images.cli import add_runtime_commands


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
        return handler(args)

    return call


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_images.runtime")
    add_runtime_commands(parser.add_subparsers(dest="runtime_command", required=True, metavar="COMMAND"), _lazy)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
