"""Tokens per second of the transformers runtime on a CUDA GPU at concurrency 1 and 32.

Builds a random-weight Llama model directly on the GPU in bf16 (nothing is downloaded or written
but the tiny tokenizer): ``--size 1b`` (~1.2B parameters, default) or ``7b`` (~6.7B, Llama-2-7B's
shape). The runtime runs in this process behind its HTTP server on localhost; every request asks
for ``--max-new-tokens`` tokens from a ~60-token prompt. The whole run stays under ``--budget``
seconds (default 420, under 8 minutes): levels that would not fit are skipped, and said so.

Run: .venv/bin/python benchmarks/runtime_gpu.py [--size 1b|7b] [--max-new-tokens 128]
Exits with status 2 and a message when CUDA is not available.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _shape(hidden: int, intermediate: int, layers: int, heads: int) -> dict[str, int]:
    return {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
    }


SIZES = {"1b": _shape(2048, 5632, 24, 16), "7b": _shape(4096, 11008, 32, 32)}
"""Llama shapes; 7b is Llama-2-7B's. The vocabulary is Llama-2's 32000 tokens."""
VOCAB_SIZE = 32000
CONCURRENCY_LEVELS = (1, 32)


def build_model(size: str, tokenizer_dir: Path) -> Any:
    """A random-weight Llama in bf16 on the GPU, with the tiny model's tokenizer (token ids past
    the tokenizer's vocabulary decode to empty text, which costs nothing here)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from model_images.runtime.loader import LoadedModel
    from model_images.runtime.tiny_model import write_tiny_model

    write_tiny_model(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)  # type: ignore[no-untyped-call]
    config = LlamaConfig(  # type: ignore[no-untyped-call]
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    device = torch.device("cuda")
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = LlamaForCausalLM(config)  # type: ignore[no-untyped-call]
    finally:
        torch.set_default_dtype(previous)
    model.eval()  # type: ignore[no-untyped-call]
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=torch.bfloat16)


async def run_level(url: str, concurrency: int, prompt: str, max_new_tokens: int, requests: int) -> tuple[int, float]:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    body = {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}

    async def one(session: aiohttp.ClientSession) -> int:
        async with gate, session.post(f"{url}/generate", json=body) as response:
            response.raise_for_status()
            generated: int = (await response.json())["details"]["generated_tokens"]
            return generated

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(session) for _ in range(requests)))
        return sum(counts), time.perf_counter() - started


async def benchmark(loaded: Any, args: argparse.Namespace, deadline: float) -> None:
    from model_images.runtime.serve import running
    from model_images.runtime.validation import Limits

    prompt = " ".join(["the weather today is mild and the wind turns to the south"] * 5)
    limits = Limits(max_input_tokens=1024, max_total_tokens=2048, max_concurrent_requests=256, max_batch_size=64)
    async with running(loaded, limits, model_id=f"random-llama-{args.size}") as url:
        await run_level(url, 1, prompt, 8, 1)  # warm-up: CUDA kernels, allocator
        print(f"{'concurrency':>11}  {'requests':>8}  {'tokens':>7}  {'seconds':>8}  {'tokens/s':>9}", flush=True)
        for concurrency in CONCURRENCY_LEVELS:
            requests = max(args.requests_at_1, concurrency) if concurrency == 1 else concurrency
            remaining = deadline - time.monotonic()
            if remaining < 20:
                print(f"{concurrency:>11}  skipped: {remaining:.0f} s left of the budget", flush=True)
                continue
            try:
                tokens, seconds = await asyncio.wait_for(
                    run_level(url, concurrency, prompt, args.max_new_tokens, requests), timeout=remaining
                )
            except TimeoutError:
                print(f"{concurrency:>11}  stopped: over the {args.budget:.0f} s budget", flush=True)
                continue
            rate = tokens / seconds
            print(f"{concurrency:>11}  {requests:>8}  {tokens:>7}  {seconds:>8.2f}  {rate:>9.1f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--requests-at-1", type=int, default=4, help="sequential requests at concurrency 1")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run")
    args = parser.parse_args()
    started = time.monotonic()

    import torch

    if not torch.cuda.is_available():
        print("error: CUDA is not available: this benchmark needs an NVIDIA GPU (see benchmarks/runtime.py for CPU)")
        return 2
    name = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as scratch:
        loaded = build_model(args.size, Path(scratch) / "tokenizer")
        parameters = sum(p.numel() for p in loaded.model.parameters()) / 1e9
        built = time.monotonic() - started
        print(
            f"{name}: random Llama {args.size} ({parameters:.2f}B parameters, bf16), built in {built:.0f} s; "
            f"{args.max_new_tokens} new tokens per request",
            flush=True,
        )
        asyncio.run(benchmark(loaded, args, started + args.budget))
    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
