"""The runtime's HTTP API, served by a real subprocess on the tiny model, called the way users
call TGI: the ``text-generation`` client, and plain HTTP for chat completions."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from text_generation import AsyncClient
from text_generation.errors import ValidationError as ClientValidationError

pytestmark = pytest.mark.runtime

TIMEOUT = aiohttp.ClientTimeout(total=60)
PROMPT = "The weather today is"
# The limits conftest.py starts the runtime with.
MAX_INPUT_TOKENS = 64
MAX_TOTAL_TOKENS = 128


async def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url, json=body) as response:
        return response.status, await response.json()


async def post_sse(url: str, body: dict[str, Any]) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order."""
    events = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data:"):
                events.append(text.removeprefix("data:").strip())
    return events


# --- the text-generation client -------------------------------------------------------------------
async def test_client_generate_returns_tokens_and_details(runtime_url: str) -> None:
    client = AsyncClient(runtime_url, timeout=60)
    response = await client.generate(PROMPT, max_new_tokens=12)

    details = response.details
    assert 1 <= details.generated_tokens <= 12
    assert len(details.tokens) == details.generated_tokens
    assert details.finish_reason.value in {"length", "eos_token"}
    if details.finish_reason.value == "length":
        assert details.generated_tokens == 12
    visible = "".join(token.text for token in details.tokens if not token.special)
    assert response.generated_text == visible
    assert response.generated_text.strip()
    assert all(token.logprob is not None and token.logprob <= 0 for token in details.tokens)
    assert details.seed is None  # greedy


async def test_client_generate_stream_adds_up_to_the_same_text(runtime_url: str) -> None:
    client = AsyncClient(runtime_url, timeout=60)
    whole = await client.generate(PROMPT, max_new_tokens=10)
    events = [event async for event in client.generate_stream(PROMPT, max_new_tokens=10)]

    assert [event.generated_text for event in events[:-1]] == [None] * (len(events) - 1)
    last = events[-1]
    assert last.generated_text == whole.generated_text
    assert last.details is not None
    assert last.details.generated_tokens == len(events)
    assert last.details.finish_reason == whole.details.finish_reason
    assert [event.token.id for event in events] == [token.id for token in whole.details.tokens]
    assert "".join(event.token.text for event in events if not event.token.special) == last.generated_text


async def test_seeded_sampling_is_reproducible_and_reports_the_seed(runtime_url: str) -> None:
    client = AsyncClient(runtime_url, timeout=60)
    first = await client.generate(PROMPT, max_new_tokens=12, do_sample=True, seed=42, temperature=1.5)
    again = await client.generate(PROMPT, max_new_tokens=12, do_sample=True, seed=42, temperature=1.5)
    other = await client.generate(PROMPT, max_new_tokens=12, do_sample=True, seed=43, temperature=1.5)

    assert first.generated_text == again.generated_text
    assert first.details.seed == 42
    assert [t.id for t in other.details.tokens] != [t.id for t in first.details.tokens]


async def test_stop_sequence_ends_generation(runtime_url: str) -> None:
    client = AsyncClient(runtime_url, timeout=60)
    free = await client.generate(PROMPT, max_new_tokens=12)
    tokens = [t for t in free.details.tokens if t.text.strip()]
    assert len(tokens) >= 3, "the tiny model should produce a few visible tokens"
    stop = tokens[2].text.strip()
    stop_index = next(i for i, t in enumerate(free.details.tokens) if stop in t.text)

    stopped = await client.generate(PROMPT, max_new_tokens=12, stop_sequences=[stop])

    assert stopped.details.finish_reason.value == "stop_sequence"
    assert stopped.details.generated_tokens == stop_index + 1
    assert stopped.generated_text.endswith(free.details.tokens[stop_index].text)
    assert stop in stopped.generated_text


# --- plain HTTP: /generate, /generate_stream ---------------------------------------------------------
async def test_generate_route_with_full_text_and_prefill_details(runtime_url: str) -> None:
    status, body = await post_json(
        f"{runtime_url}/generate",
        {
            "inputs": PROMPT,
            "parameters": {
                "max_new_tokens": 5,
                "details": True,
                "decoder_input_details": True,
                "return_full_text": True,
                "top_n_tokens": 3,
            },
        },
    )
    assert status == 200, body
    assert body["generated_text"].startswith(PROMPT)
    details = body["details"]
    prefill = details["prefill"]
    assert prefill[0]["logprob"] is None  # nothing predicts the first prompt token
    assert len(prefill) > 2 and all(token["logprob"] <= 0 for token in prefill[1:])
    assert len(details["top_tokens"]) == details["generated_tokens"]
    for chosen, top in zip(details["tokens"], details["top_tokens"], strict=True):
        assert len(top) == 3
        assert top[0]["id"] == chosen["id"]  # greedy picks the most likely token


async def test_generate_stream_route_without_details_sends_none(runtime_url: str) -> None:
    events = [
        json.loads(e)
        for e in await post_sse(
            f"{runtime_url}/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": 3}}
        )
    ]
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["generated_text"] is not None
    assert all(event["details"] is None for event in events)


async def test_info_health_and_metrics(runtime_url: str) -> None:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        async with session.get(f"{runtime_url}/info") as response:
            info = await response.json()
        async with session.get(f"{runtime_url}/health") as response:
            health_status = response.status
        async with session.get(f"{runtime_url}/metrics") as response:
            metrics_type = response.headers["Content-Type"]
            metrics_text = await response.text()
    assert info["model_id"] == "tiny-llama"
    assert info["max_input_tokens"] == MAX_INPUT_TOKENS
    assert info["max_total_tokens"] == MAX_TOTAL_TOKENS
    assert info["model_device_type"] == "cpu" and info["model_dtype"] == "float32"
    assert health_status == 200
    assert metrics_type.startswith("text/plain")
    assert "kaito_runtime_batch_size_bucket" in metrics_text
    assert "python_gc_objects_collected" not in metrics_text  # its own registry, not the global one


# --- chat completions ------------------------------------------------------------------------------
CHAT = {"messages": [{"role": "user", "content": "What is a token?"}], "max_tokens": 8, "temperature": 0}


async def test_chat_completion(runtime_url: str) -> None:
    status, body = await post_json(f"{runtime_url}/v1/chat/completions", CHAT)
    assert status == 200, body
    assert body["object"] == "chat.completion"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in {"length", "stop"}
    usage = body["usage"]
    assert 1 <= usage["completion_tokens"] <= 8
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert body["model"] == "tiny-llama"


async def test_chat_completion_stream_matches_plain(runtime_url: str) -> None:
    status, plain = await post_json(f"{runtime_url}/v1/chat/completions", CHAT)
    assert status == 200
    payloads = await post_sse(
        f"{runtime_url}/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    )

    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    token_chunks = chunks[:-1]
    text = "".join(chunk["choices"][0]["delta"]["content"] for chunk in token_chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert [c["choices"][0]["finish_reason"] for c in token_chunks[:-1]] == [None] * (len(token_chunks) - 1)
    assert token_chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


# --- TGI's error shapes and codes ------------------------------------------------------------------
LONG_PROMPT = " ".join(["the"] * (MAX_INPUT_TOKENS + 10))  # "the" is one token: 75 tokens with BOS


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": "", "parameters": {"max_new_tokens": 5}}, "Input validation error: `inputs` cannot be empty"),
        (
            {"inputs": PROMPT, "parameters": {"max_new_tokens": MAX_TOTAL_TOKENS + 1}},
            f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL_TOKENS}. Given: ",
        ),
        (
            {"inputs": LONG_PROMPT, "parameters": {"max_new_tokens": 5}},
            f"Input validation error: `inputs` must have less than {MAX_INPUT_TOKENS} tokens. Given: ",
        ),
        (
            {"inputs": PROMPT, "parameters": {"max_new_tokens": 0}},
            "Input validation error: `max_new_tokens` must be strictly positive",
        ),
        ({"inputs": PROMPT, "parameters": {"top_p": 1.0}}, "Input validation error: `top_p` must be > 0.0 and < 1.0"),
        ({"parameters": {}}, "Failed to deserialize the JSON body into the target type: inputs: Field required"),
    ],
)
@pytest.mark.parametrize("route", ["/generate", "/generate_stream", "/"])
async def test_bad_requests_get_tgi_validation_errors(
    runtime_url: str, route: str, body: dict[str, Any], message: str
) -> None:
    status, error = await post_json(f"{runtime_url}{route}", body)
    assert status == 422
    assert error["error_type"] == "validation"
    assert error["error"].startswith(message)


async def test_client_raises_its_validation_error(runtime_url: str) -> None:
    client = AsyncClient(runtime_url, timeout=60)
    with pytest.raises(ClientValidationError, match="must have less than"):
        await client.generate(LONG_PROMPT, max_new_tokens=5)
    with pytest.raises(ClientValidationError, match="must be <="):
        async for _ in client.generate_stream(PROMPT, max_new_tokens=MAX_TOTAL_TOKENS * 2):
            pass


async def test_chat_validation_error(runtime_url: str) -> None:
    status, error = await post_json(f"{runtime_url}/v1/chat/completions", {**CHAT, "max_tokens": MAX_TOTAL_TOKENS + 1})
    assert status == 422
    assert (
        error
        == {
            "error": error["error"],
            "error_type": "validation",
        }
        and "`messages` tokens + `max_tokens` must be <=" in error["error"]
    )


# --- batching ----------------------------------------------------------------------------------------
def batched_decode_steps(metrics_text: str) -> tuple[float, float]:
    """(decode steps observed, decode steps that ran more than one sequence)."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "kaito_runtime_batch_size":
            buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
            count = next(s.value for s in family.samples if s.name.endswith("_count"))
            return count, count - buckets["1.0"]
    raise AssertionError("no kaito_runtime_batch_size histogram in /metrics")


async def scrape(runtime_url: str) -> str:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.get(f"{runtime_url}/metrics") as response:
        return await response.text()


async def test_concurrent_requests_are_batched_and_finish_sooner(runtime_url: str) -> None:
    prompts = [f"{PROMPT} number {i}" for i in range(16)]
    client = AsyncClient(runtime_url, timeout=120)

    async def one(prompt: str) -> int:
        response = await client.generate(prompt, max_new_tokens=24)
        generated: int = response.details.generated_tokens
        return generated

    started = time.perf_counter()
    sequential_tokens = [await one(prompt) for prompt in prompts]
    sequential = time.perf_counter() - started

    _, batched_before = batched_decode_steps(await scrape(runtime_url))
    started = time.perf_counter()
    concurrent_tokens = await asyncio.gather(*(one(prompt) for prompt in prompts))
    concurrent = time.perf_counter() - started
    _, batched_after = batched_decode_steps(await scrape(runtime_url))

    assert concurrent_tokens == sequential_tokens  # same work either way (greedy)
    assert batched_after > batched_before, "no decode step ran more than one sequence"
    assert concurrent < sequential, f"concurrent {concurrent:.2f}s is not faster than sequential {sequential:.2f}s"
