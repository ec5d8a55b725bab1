"""The ``kaito`` command: one entry point, each package registers its own sub-commands.

Sub-command modules are imported only when their command runs, so ``kaito crds`` does not pay for
torch or the Azure SDK.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _crds(args: argparse.Namespace) -> int:
    from kaito_operator.api import crds

    if args.write:
        for path in crds.write_all():
            print(f"wrote {path}")
    else:
        print("---\n".join(crds.render(crd) for crd in crds.all_crds().values()), end="")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from kaito_operator.presets.table import render_catalogue

    print(render_catalogue())
    return 0


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        import importlib

        handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
        return handler(args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kaito", description="kaito-py: serve LLMs on AKS from a Workspace.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="print the CRDs generated from the API models")
    crds.add_argument("--write", action="store_true", help="write them to helm/kaito/crds/")
    crds.set_defaults(func=_crds)

    presets = sub.add_parser("presets", help="print the preset catalogue")
    presets.set_defaults(func=_presets)

    from kaito.run_cli import register as register_run
    from kaito.status_cli import register as register_status
    from model_images.cli import register as register_model_images
    from sandbox.cli import register as register_sandbox

    register_run(sub, _lazy)
    register_status(sub, _lazy)
    register_sandbox(sub, _lazy)
    register_model_images(sub, _lazy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
