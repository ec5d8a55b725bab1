"""Registers ``kaito images``, ``kaito runtime`` and ``kaito generate``.

Only argparse here: each command's module is imported when the command runs, so ``kaito crds``
never imports torch.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

Lazy = Callable[[str, str], Callable[[argparse.Namespace], int]]


def register(sub: Any, lazy: Lazy) -> None:
    images = sub.add_parser("images", help="build TGI model images with the weights baked in")
    add_images_commands(images.add_subparsers(dest="images_command", required=True, metavar="COMMAND"), lazy)

    runtime = sub.add_parser("runtime", help="the transformers runtime that serves TGI's API on CPU or GPU")
    add_runtime_commands(runtime.add_subparsers(dest="runtime_command", required=True, metavar="COMMAND"), lazy)

    generate = sub.add_parser(
        "generate",
        help="send a prompt to a Workspace's inference endpoint",
        description=(
            "Finds the Workspace's Service (same name, port 80) and calls it: inside the cluster "
            "directly, outside through the API server's service proxy with your kubeconfig's "
            "credentials. --url calls any TGI-compatible endpoint instead."
        ),
    )
    generate.add_argument("workspace", nargs="?", help="Workspace name (not needed with --url)")
    generate.add_argument("prompt", help="the prompt (or the user message with --chat)")
    generate.add_argument("--namespace", "-n", default="default")
    generate.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    generate.add_argument("--chat", action="store_true", help="use /v1/chat/completions")
    generate.add_argument("--max-new-tokens", type=int, default=100)
    generate.add_argument("--temperature", type=float, help="with --chat: 0 for greedy (default: the server's)")
    generate.add_argument("--seed", type=int, help="with --chat: sampling seed")
    generate.add_argument("--url", help="call this endpoint directly, e.g. http://localhost:8080")
    generate.add_argument(
        "--api-key",
        default=os.environ.get("KAITO_API_KEY") or None,
        help="the endpoint's API key (kaito.sh/api-key-secret), sent as 'Authorization: Bearer' "
        "(default: $KAITO_API_KEY)",
    )
    generate.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    generate.add_argument("--context", help="kubeconfig context")
    generate.add_argument("--timeout", type=float, default=120.0, help="seconds allowed for the whole call")
    generate.set_defaults(func=lazy("model_images.generate", "main"))


def add_images_commands(sub: Any, lazy: Lazy) -> None:
    build = sub.add_parser(
        "build",
        help="download a preset's weights, check them and build its TGI image",
        description=(
            "Downloads the preset's weights at its pinned revision (or takes --weights-dir), checks "
            "them, writes a Docker build context, and runs `docker buildx build` when a Docker "
            "engine answers (`docker info`); otherwise prints the command to run. Gated presets "
            "(llama-2) need HF_TOKEN and --revision."
        ),
    )
    build.add_argument("preset", help="preset name, e.g. falcon-7b (see `kaito presets`)")
    build.add_argument("--registry", help="image registry (default: the catalogue's, ghcr.io/kaito-py)")
    build.add_argument("--push", action="store_true", help="push the image after building it")
    build.add_argument("--weights-dir", type=Path, help="use weights already on disk instead of downloading")
    build.add_argument("--revision", help="Hugging Face commit to download (required for gated presets)")
    build.add_argument("--output", type=Path, help="build context directory (default: build/images/PRESET)")
    build.add_argument(
        "--skip-size-check",
        action="store_true",
        help="accept weights whose total size does not match the preset's parameter count",
    )
    build.add_argument("--platform", default="linux/amd64")
    build.add_argument("--build-timeout", type=float, default=4 * 3600, help="seconds allowed for docker buildx")
    build.set_defaults(func=lazy("model_images.images.build", "main"))

    matrix = sub.add_parser("matrix", help="print the image build matrix (JSON) from the preset catalogue")
    matrix.add_argument("--all", action="store_true", help="include private (gated) presets")
    matrix.add_argument("--registry", help="image registry (default: the catalogue's)")
    matrix.set_defaults(func=lazy("model_images.images.matrix", "main"))


def add_runtime_commands(sub: Any, lazy: Lazy) -> None:
    serve = sub.add_parser("serve", help="serve a local Hugging Face model directory with TGI's HTTP API")
    serve.add_argument("--model", required=True, help="model directory (config.json, safetensors, tokenizer)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=80)
    serve.add_argument("--max-input-tokens", type=int, help="default: max total tokens - 1")
    serve.add_argument("--max-total-tokens", type=int, help="default: the model's context, at most 4096")
    serve.add_argument("--max-concurrent-requests", type=int, default=128)
    serve.add_argument("--max-batch-size", type=int, default=32, help="sequences decoded together per step")
    serve.add_argument("--model-id", help="name reported by /info (default: the directory)")
    serve.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    serve.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on every route but health and metrics (default: "
        "$KAITO_API_KEY, which keeps the key out of the process list); an empty key is refused",
    )
    serve.set_defaults(func=lazy("model_images.runtime.serve", "main"))

    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight Llama model directory (for tests)")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--max-position-embeddings", type=int, default=1024, help="the longest sequence the model takes (default 1024)"
    )
    tiny.set_defaults(func=lazy("model_images.runtime.serve", "tiny_model_main"))
