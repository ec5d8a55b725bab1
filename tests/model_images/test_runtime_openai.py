"""The runtime's OpenAI routes beyond plain chat (``/v1/completions``, log-probabilities, presence
penalty), the prompt character cap, and a client that hangs up on a non-streaming request.

Against the runtime subprocess of conftest.py, except the hang-up test, which needs a long
generation and runs its own in-process server with a larger token budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kaito_operator.testing import eventually

pytestmark = pytest.mark.runtime

TIMEOUT = aiohttp.ClientTimeout(total=60)
PROMPT = "The weather today is"
MAX_INPUT_TOKENS = 64  # conftest.py starts the runtime with this
CHARS_PER_TOKEN_CAP = 32  # the documented default: 32 characters per allowed input token


async def post_json(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url, json=body) as response:
        return response.status, await response.json()


async def post_sse(url: str, body: dict[str, Any]) -> list[Any]:
    """The JSON payloads of an SSE response, in order; asserts it ends with ``[DONE]``."""
    payloads = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        async for line in response.content:
            text = line.decode().strip()
            if text.startswith("data:"):
                payloads.append(text.removeprefix("data:").strip())
    assert payloads[-1] == "[DONE]"
    return [json.loads(p) for p in payloads[:-1]]


async def greedy_generate(url: str, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    status, body = await post_json(
        f"{url}/generate", {"inputs": prompt, "parameters": {"max_new_tokens": max_new_tokens, "details": True}}
    )
    assert status == 200, body
    result: dict[str, Any] = body
    return result


# --- /v1/completions -------------------------------------------------------------------------------
async def test_completion_is_the_greedy_generation_of_the_prompt(runtime_url: str) -> None:
    expected = await greedy_generate(runtime_url, PROMPT, 10)
    status, body = await post_json(
        f"{runtime_url}/v1/completions", {"prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    )
    assert status == 200, body
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "tiny-llama"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["text"] == expected["generated_text"]
    assert choice["logprobs"] is None
    assert choice["finish_reason"] == ("length" if expected["details"]["finish_reason"] == "length" else "stop")
    usage = body["usage"]
    assert usage["completion_tokens"] == expected["details"]["generated_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_completion_echo_puts_the_prompt_first(runtime_url: str) -> None:
    status, body = await post_json(
        f"{runtime_url}/v1/completions", {"prompt": [PROMPT], "max_tokens": 4, "temperature": 0, "echo": True}
    )
    assert status == 200, body
    assert body["choices"][0]["text"].startswith(PROMPT)


async def test_completion_stream_adds_up_to_the_plain_text(runtime_url: str) -> None:
    request = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    status, plain = await post_json(f"{runtime_url}/v1/completions", request)
    assert status == 200
    chunks = await post_sse(
        f"{runtime_url}/v1/completions", {**request, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert all(chunk["object"] == "text_completion" for chunk in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    token_chunks = chunks[:-1]
    assert "".join(c["choices"][0]["text"] for c in token_chunks) == plain["choices"][0]["text"]
    assert [c["choices"][0]["finish_reason"] for c in token_chunks[:-1]] == [None] * (len(token_chunks) - 1)
    assert token_chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]


async def test_completion_logprobs_list_the_chosen_and_the_likeliest_tokens(runtime_url: str) -> None:
    expected = await greedy_generate(runtime_url, PROMPT, 6)
    status, body = await post_json(
        f"{runtime_url}/v1/completions", {"prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 3}
    )
    assert status == 200, body
    logprobs = body["choices"][0]["logprobs"]
    tokens = expected["details"]["tokens"]
    assert logprobs["tokens"] == [t["text"] for t in tokens]
    assert logprobs["token_logprobs"] == pytest.approx([t["logprob"] for t in tokens], abs=1e-5)
    # Offsets are where each token's text starts in the completion.
    assert logprobs["text_offset"][0] == 0
    assert logprobs["text_offset"][1:] == [sum(len(t["text"]) for t in tokens[: i + 1]) for i in range(len(tokens) - 1)]
    for chosen, logprob, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert 1 <= len(top) <= 3
        # Greedy decoding picks the likeliest token, so it heads its own top list.
        assert max(top.values()) == pytest.approx(logprob, abs=1e-5)
        assert top.get(chosen) == pytest.approx(logprob, abs=1e-5)


# --- chat log-probabilities and penalties ----------------------------------------------------------
CHAT = {"messages": [{"role": "user", "content": "What is a token?"}], "max_tokens": 6, "temperature": 0}


async def test_chat_logprobs_in_openai_shape(runtime_url: str) -> None:
    status, body = await post_json(f"{runtime_url}/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 2})
    assert status == 200, body
    choice = body["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    visible = "".join(entry["token"] for entry in content)
    assert visible.startswith(choice["message"]["content"])  # a final special token adds its own text
    for entry in content:
        assert entry["logprob"] <= 0
        assert entry["bytes"] == list(entry["token"].encode())
        assert len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token"] == entry["token"]  # greedy: the chosen one is the likeliest
        assert entry["top_logprobs"][0]["logprob"] >= entry["top_logprobs"][1]["logprob"]


async def test_chat_stream_carries_one_logprob_per_chunk(runtime_url: str) -> None:
    status, plain = await post_json(f"{runtime_url}/v1/chat/completions", {**CHAT, "logprobs": True})
    assert status == 200
    chunks = await post_sse(f"{runtime_url}/v1/chat/completions", {**CHAT, "logprobs": True, "stream": True})
    streamed = [entry for chunk in chunks for entry in chunk["choices"][0]["logprobs"]["content"]]
    assert streamed == plain["choices"][0]["logprobs"]["content"]


async def test_chat_without_logprobs_reports_none(runtime_url: str) -> None:
    status, body = await post_json(f"{runtime_url}/v1/chat/completions", CHAT)
    assert status == 200
    assert body["choices"][0]["logprobs"] is None


async def test_presence_penalty_changes_the_greedy_text(runtime_url: str) -> None:
    request = {**CHAT, "max_tokens": 24}
    _, plain = await post_json(f"{runtime_url}/v1/chat/completions", request)
    status, penalised = await post_json(f"{runtime_url}/v1/chat/completions", {**request, "presence_penalty": 2.0})
    assert status == 200, penalised
    # A random-weight model repeats itself; a strong presence penalty must change what it picks.
    assert penalised["choices"][0]["message"]["content"] != plain["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("route", "fields", "message"),
    [
        ("/v1/chat/completions", {"top_logprobs": 2}, "`top_logprobs` needs `logprobs` to be true"),
        ("/v1/chat/completions", {"logprobs": True, "top_logprobs": 6}, "`top_logprobs` must be >= 0 and <= 5"),
        ("/v1/chat/completions", {"presence_penalty": 2.5}, "`presence_penalty` must be >= -2.0 and <= 2.0"),
        ("/v1/chat/completions", {"logit_bias": {"5": 1.0}}, "`logit_bias` is not supported"),
        ("/v1/completions", {"logprobs": 6}, "`logprobs` must be >= 0 and <= 5"),
        ("/v1/completions", {"suffix": "end"}, "`suffix` is not supported"),
        ("/v1/completions", {"n": 2}, "`n` != 1 is not supported"),
        ("/v1/completions", {"best_of": 2}, "`best_of` != 1 is not supported"),
        ("/v1/completions", {"echo": True, "logprobs": 1}, "`echo` together with `logprobs` is not supported"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "`prompt` must be one string"),
    ],
)
async def test_openai_fields_it_cannot_honour_are_refused_by_name(
    runtime_url: str, route: str, fields: dict[str, Any], message: str
) -> None:
    base = CHAT if route == "/v1/chat/completions" else {"prompt": PROMPT, "max_tokens": 4}
    status, error = await post_json(f"{runtime_url}{route}", {**base, **fields})
    assert status == 422, error
    assert error["error_type"] == "validation"
    assert message in error["error"]


# --- validation errors name the fields the client sent ----------------------------------------------
MAX_TOTAL_TOKENS = 128  # conftest.py starts the runtime with this
LONG_TEXT = " ".join(["the"] * (MAX_INPUT_TOKENS + 10))  # "the" is one token: over the input limit


def chat_body(content: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **fields}


@pytest.mark.parametrize(
    ("route", "body", "message"),
    [
        ("/v1/completions", {"prompt": ""}, "`prompt` cannot be empty"),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": 0}, "`max_tokens` must be strictly positive"),
        (
            "/v1/completions",
            {"prompt": PROMPT, "max_tokens": MAX_TOTAL_TOKENS},
            f"`prompt` tokens + `max_tokens` must be <= {MAX_TOTAL_TOKENS}. Given: ",
        ),
        (
            "/v1/completions",
            {"prompt": LONG_TEXT, "max_tokens": 2},
            f"`prompt` must have less than {MAX_INPUT_TOKENS} tokens",
        ),
        ("/v1/chat/completions", chat_body("hi", max_tokens=0), "`max_tokens` must be strictly positive"),
        (
            "/v1/chat/completions",
            chat_body("hi", max_tokens=MAX_TOTAL_TOKENS),
            f"`messages` tokens + `max_tokens` must be <= {MAX_TOTAL_TOKENS}. Given: ",
        ),
        (
            "/v1/chat/completions",
            chat_body(LONG_TEXT, max_tokens=2),
            f"`messages` must have less than {MAX_INPUT_TOKENS} tokens",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_validation_errors_name_the_openai_fields(
    runtime_url: str, route: str, body: dict[str, Any], message: str, stream: bool
) -> None:
    status, error = await post_json(f"{runtime_url}{route}", {**body, "stream": stream})
    assert status == 422, error
    assert error["error_type"] == "validation"
    assert message in error["error"], error
    # TGI's names are for TGI's routes; this client sent none of them.
    assert "inputs" not in error["error"]
    assert "max_new_tokens" not in error["error"]


# --- the character cap ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "field", "body"),
    [
        ("/generate", "inputs", lambda text: {"inputs": text, "parameters": {"max_new_tokens": 2}}),
        ("/v1/completions", "prompt", lambda text: {"prompt": text, "max_tokens": 2}),
        ("/v1/chat/completions", "messages", lambda text: {"messages": [{"role": "user", "content": text}]}),
    ],
)
async def test_an_over_long_prompt_is_refused_before_tokenising(
    runtime_url: str, route: str, field: str, body: Any
) -> None:
    cap = CHARS_PER_TOKEN_CAP * MAX_INPUT_TOKENS
    status, error = await post_json(f"{runtime_url}{route}", body("x" * (cap + 1)))
    assert status == 422, error
    assert f"`{field}` must have at most {cap} characters" in error["error"]


# --- a client that hangs up ------------------------------------------------------------------------
def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_a_dropped_non_streaming_request_stops_and_counts_as_cancelled(tiny_model_dir: Path) -> None:
    pytest.importorskip("torch")
    from model_images.runtime.loader import load_model
    from model_images.runtime.serve import running
    from model_images.runtime.validation import Limits

    loaded = load_model(tiny_model_dir, device="cpu")
    limits = Limits(max_input_tokens=64, max_total_tokens=1024)
    async with running(loaded, limits, model_id="tiny") as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def metrics() -> str:
            async with session.get(f"{url}/metrics") as response:
                return await response.text()

        # A plain HTTP/1.1 client on its own socket, so closing it is a real hang-up.
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        payload = json.dumps({"inputs": PROMPT, "parameters": {"max_new_tokens": 900}}).encode()
        writer.write(
            b"POST /generate HTTP/1.1\r\nHost: runtime\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        await writer.drain()

        async def generating() -> bool | None:
            return True if metric(await metrics(), "kaito_runtime_current_batch_size") == 1 else None

        await eventually(generating, what="the request to be generating")
        writer.close()
        await writer.wait_closed()

        async def stopped() -> str | None:
            text = await metrics()
            done = metric(text, "kaito_runtime_requests_total", outcome="cancelled") == 1
            return text if done and metric(text, "kaito_runtime_current_batch_size") == 0 else None

        text = await eventually(stopped, what="the dropped request to leave the batch as cancelled")
        assert metric(text, "kaito_runtime_requests_total", outcome="success") == 0
        # It stopped early: far fewer than the 900 tokens it asked for were generated.
        assert metric(text, "kaito_runtime_generated_tokens_total") == 0
        assert metric(text, "kaito_runtime_batch_size_count") < 900
        del reader


async def test_a_stream_whose_client_is_gone_before_the_headers_stops_generating(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client hangs up between the request's admission and the response's headers: starting
    the response raises, and that request's generation must stop, on every streaming route.

    Which await a real hang-up interrupts depends on timing, so the failure is injected where the
    headers are written: the SSE start raises ConnectionResetError, as aiohttp does on a closed
    transport.
    """
    pytest.importorskip("torch")
    from model_images.runtime import server
    from model_images.runtime.loader import load_model
    from model_images.runtime.serve import running
    from model_images.runtime.validation import Limits

    async def client_gone(request: Any, headers: dict[str, str]) -> Any:
        raise ConnectionResetError("Cannot write to closing transport")

    monkeypatch.setattr(server, "_start_sse", client_gone)
    long = 900  # far more tokens than the tiny model makes before a cancelled request leaves
    streams = [
        ("/generate_stream", {"inputs": PROMPT, "parameters": {"max_new_tokens": long}}),
        ("/", {"inputs": PROMPT, "parameters": {"max_new_tokens": long}, "stream": True}),
        ("/v1/completions", {"prompt": PROMPT, "max_tokens": long, "stream": True}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": long, "stream": True},
        ),
    ]
    loaded = load_model(tiny_model_dir, device="cpu")
    limits = Limits(max_input_tokens=64, max_total_tokens=1024)
    async with running(loaded, limits, model_id="tiny") as url, aiohttp.ClientSession(timeout=TIMEOUT) as session:

        async def metrics() -> str:
            async with session.get(f"{url}/metrics") as response:
                return await response.text()

        for done, (route, body) in enumerate(streams, start=1):
            with contextlib.suppress(aiohttp.ClientError):  # the server drops the connection
                async with session.post(f"{url}{route}", json=body) as response:
                    await response.read()

            async def stopped(done: int = done) -> str | None:
                text = await metrics()
                cancelled = metric(text, "kaito_runtime_requests_total", outcome="cancelled") == done
                return text if cancelled and metric(text, "kaito_runtime_current_batch_size") == 0 else None

            text = await eventually(stopped, what=f"the stream on {route} to be cancelled and leave the batch")
        assert metric(text, "kaito_runtime_requests_total", outcome="success") == 0
        assert metric(text, "kaito_runtime_batch_size_count") < long
