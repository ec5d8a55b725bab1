"""Runs the runtime: load the model, start the engine, serve HTTP until SIGTERM, then drain.

``running()`` gives the same server in-process (benchmarks, tests); ``main()`` is what
``kaito runtime serve`` and ``python -m model_images.runtime serve`` call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from aiohttp import web

from model_images.runtime.engine import Engine
from model_images.runtime.loader import LoadedModel, ModelLoadError, load_model
from model_images.runtime.metrics import RuntimeMetrics
from model_images.runtime.server import Encoder, InferenceServer, ServerConfig
from model_images.runtime.validation import Limits

log = logging.getLogger(__name__)

DEFAULT_MAX_TOTAL_TOKENS = 4096
API_KEY_ENV = "KAITO_API_KEY"
"""The variable the API key is read from when ``--api-key`` is not given (the operator's pods
set it from the ``kaito.sh/api-key-secret`` Secret)."""
UNEXPANDED_REFERENCE = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_]*\)")
"""``$(NAME)`` left as is: the kubelet expands it in a container's command only when NAME is set."""
GRACEFUL_SHUTDOWN_SECONDS = 90.0
"""How long in-flight requests may run after SIGTERM (TGI's default)."""


def runtime_version() -> str:
    try:
        return metadata.version("kaito-py")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def limits_for(
    loaded: LoadedModel,
    *,
    max_input_tokens: int | None = None,
    max_total_tokens: int | None = None,
    max_concurrent_requests: int = 128,
    max_batch_size: int = 32,
) -> Limits:
    """Limits with TGI's defaults (total = the model's context, capped at 4096; input = total - 1),
    refusing a total the model's position embeddings cannot hold."""
    context = loaded.max_position_embeddings
    total = max_total_tokens or min(context or DEFAULT_MAX_TOTAL_TOKENS, DEFAULT_MAX_TOTAL_TOKENS)
    if context is not None and total > context:
        raise ValueError(f"--max-total-tokens {total} is more than the model's max_position_embeddings ({context})")
    return Limits(
        max_input_tokens=max_input_tokens or total - 1,
        max_total_tokens=total,
        max_concurrent_requests=max_concurrent_requests,
        max_batch_size=max_batch_size,
    )


@contextlib.asynccontextmanager
async def running(
    loaded: LoadedModel,
    limits: Limits,
    *,
    model_id: str,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = GRACEFUL_SHUTDOWN_SECONDS,
    api_key: str | None = None,
) -> AsyncIterator[str]:
    """Serve ``loaded`` on ``host:port`` (0: any free port) and yield the base URL; on exit, let
    in-flight requests finish (up to ``shutdown_timeout``), then stop the engine."""
    metrics = RuntimeMetrics()
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=limits.max_batch_size, metrics=metrics)
    config = ServerConfig(
        model_id=model_id,
        limits=limits,
        dtype=str(loaded.dtype).removeprefix("torch."),
        device_type=loaded.device.type,
        version=runtime_version(),
    )
    server = InferenceServer(
        engine, Encoder(loaded.tokenizer.backend_tokenizer), loaded.tokenizer, config, metrics, api_key=api_key
    )
    await engine.start()
    # handler_cancellation: a request whose client disconnects is cancelled, so its generation
    # stops (aiohttp otherwise runs a non-streaming handler to the end for nobody).
    runner = web.AppRunner(server.app(), shutdown_timeout=shutdown_timeout, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{_url_host(host)}:{bound_port}"
    finally:
        await runner.cleanup()
        await engine.stop()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class ServeOptions:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = 80
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_concurrent_requests: int = 128
    max_batch_size: int = 32
    model_id: str | None = None
    device: str | None = None
    api_key: str | None = None


async def serve(options: ServeOptions) -> int:
    try:
        loaded = await asyncio.to_thread(load_model, options.model_dir, options.device)
        limits = limits_for(
            loaded,
            max_input_tokens=options.max_input_tokens,
            max_total_tokens=options.max_total_tokens,
            max_concurrent_requests=options.max_concurrent_requests,
            max_batch_size=options.max_batch_size,
        )
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    model_id = options.model_id or str(options.model_dir)
    async with running(
        loaded, limits, model_id=model_id, host=options.host, port=options.port, api_key=options.api_key
    ) as url:
        print(f"kaito runtime serving {model_id} on {url}", flush=True)
        await stop.wait()
        log.info("stopping: finishing in-flight requests (up to %s s)", GRACEFUL_SHUTDOWN_SECONDS)
    return 0


def resolve_api_key(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The API key: ``--api-key`` when given, else ``$KAITO_API_KEY`` when set, else None (an
    open endpoint). A given but empty key is refused, never read as "no key": a Secret whose value
    is empty would otherwise leave the endpoint open without a word."""
    if flag is not None:
        source, key = "--api-key", flag
    elif API_KEY_ENV in environ:
        source, key = API_KEY_ENV, environ[API_KEY_ENV]
    else:
        return None
    if not key.strip():
        raise ValueError(
            f"{source} is empty: an API key must have at least one non-blank character (is the "
            f"api-key value of the kaito.sh/api-key-secret Secret empty?); to serve without a key, "
            f"give neither --api-key nor {API_KEY_ENV}"
        )
    if UNEXPANDED_REFERENCE.fullmatch(key):
        raise ValueError(
            f"{source} is {key!r}, a variable reference the kubelet did not expand: the container has no "
            f"such variable (set {API_KEY_ENV} from the Secret, or pass the key itself)"
        )
    return key


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        api_key = resolve_api_key(args.api_key, os.environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = ServeOptions(
        model_dir=Path(args.model),
        host=args.host,
        port=args.port,
        max_input_tokens=args.max_input_tokens,
        max_total_tokens=args.max_total_tokens,
        max_concurrent_requests=args.max_concurrent_requests,
        max_batch_size=args.max_batch_size,
        model_id=args.model_id,
        device=args.device,
        api_key=api_key,
    )
    return asyncio.run(serve(options))


def tiny_model_main(args: argparse.Namespace) -> int:
    from model_images.runtime.tiny_model import write_tiny_model

    path = write_tiny_model(args.directory, seed=args.seed, max_position_embeddings=args.max_position_embeddings)
    print(f"wrote a tiny Llama model to {path}")
    return 0
