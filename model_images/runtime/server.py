"""TGI's HTTP API on aiohttp, in front of the batching engine.

Routes: ``POST /generate``, ``POST /generate_stream`` (SSE), ``POST /`` (the ``text-generation``
client's route: a JSON list, or SSE when ``"stream": true``), ``POST /v1/chat/completions`` and
``POST /v1/completions`` (plain, or SSE ending ``data: [DONE]``), ``GET /info``, ``GET /health``
(also ``/ping`` and ``GET /``), ``GET /metrics``, ``GET /v1/models``.

Prompts are tokenised in a worker thread, after a character cap, so a long prompt never stalls
the event loop. A client that goes away cancels its request (the app runs with aiohttp's
``handler_cancellation``), streaming or not, and the request counts as ``cancelled``.

Errors are TGI's ``{"error", "error_type"}`` with its codes (422 validation, 429 overloaded, 424
generation). One deliberate difference: a stream whose request is invalid or over the
concurrency limit gets the error status and JSON body before any event is sent, where TGI answers
200 and sends the error as the first event; the ``text-generation`` client reads both the same
way, and curl users get a meaningful status. Failures after the first event are sent as an SSE
error event, as TGI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import pydantic
from aiohttp import web
from pydantic import BaseModel

from model_images.runtime import chat
from model_images.runtime.engine import Completion, Engine, GenerationHandle, GenerationInput, TokenEvent
from model_images.runtime.metrics import CONTENT_TYPE, RuntimeMetrics
from model_images.runtime.protocol import (
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    CompatGenerateRequest,
    CompletionChoice,
    CompletionRequest,
    Details,
    GenerateParameters,
    GenerateRequest,
    Info,
    StreamDetails,
    StreamResponse,
    TextCompletion,
    Usage,
    chat_finish_reason,
)
from model_images.runtime.validation import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    TGI_FIELDS,
    FieldNames,
    InferenceError,
    Limits,
    OverloadedError,
    RequestValidationError,
    UnhealthyError,
    ValidParameters,
    validate_input_chars,
    validate_input_length,
    validate_parameters,
)

OPEN_PATHS: Final = frozenset({"/health", "/ping", "/", "/metrics"})
"""GET routes that stay open with an API key: probes and metric scrapers carry no key."""
PAYLOAD_LIMIT = 2_000_000
"""Largest request body accepted, in bytes (TGI's ``--payload-limit`` default)."""

_Model = TypeVar("_Model", bound=BaseModel)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Encoder:
    """Tokenises prompts. Wraps a ``tokenizers.Tokenizer``, whose encode is safe to call while
    the engine thread decodes (neither mutates it)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    def __call__(self, text: str, add_special_tokens: bool) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids


@dataclass(frozen=True)
class ServerConfig:
    model_id: str
    limits: Limits
    dtype: str
    device_type: str
    version: str


class InferenceServer:
    def __init__(
        self,
        engine: Engine,
        encoder: Encoder,
        chat_tokenizer: chat.ChatTokenizer,
        config: ServerConfig,
        metrics: RuntimeMetrics,
        *,
        api_key: str | None = None,
    ) -> None:
        self._engine = engine
        self._encode = encoder
        self._chat_tokenizer = chat_tokenizer
        self._config = config
        self._limits = config.limits
        self._metrics = metrics
        self._in_flight = 0
        if api_key is not None and not api_key.strip():
            # An empty key must never read as "no key": that would serve an open endpoint.
            raise ValueError("api_key is empty: give a key, or None to serve without one")
        self._expected_authorization = None if api_key is None else f"Bearer {api_key}".encode()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorize, self._errors], client_max_size=PAYLOAD_LIMIT)
        app.router.add_post("/generate", self.generate)
        app.router.add_post("/generate_stream", self.generate_stream)
        app.router.add_post("/", self.compat_generate)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/info", self.info)
        app.router.add_get("/health", self.health)
        app.router.add_get("/ping", self.health)
        app.router.add_get("/", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        return app

    # --- routes -------------------------------------------------------------------------------
    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, GenerateRequest)
        return web.json_response(await self._generate(body, body.parameters), headers=self._headers())

    async def generate_stream(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, GenerateRequest)
        return await self._generate_stream(request, body)

    async def compat_generate(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, CompatGenerateRequest)
        if body.stream:
            return await self._generate_stream(request, body)
        return web.json_response([await self._generate(body, body.parameters)], headers=self._headers())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, ChatCompletionRequest)
        parameters = chat.generate_parameters(body, self._limits.max_top_n_tokens)
        prompt, add_special_tokens = chat.render_prompt(self._chat_tokenizer, body)
        model = body.model or self._config.model_id
        top_n = parameters.top_n_tokens or 0
        with self._slot():
            generation, _ = await self._prepare(
                prompt, parameters, stream=body.stream, add_special_tokens=add_special_tokens, fields=CHAT_FIELDS
            )
            handle = self._engine.submit(generation)
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return await self._chat_stream(
                    request, handle, model, include_usage=include_usage, logprobs=bool(body.logprobs), top_n=top_n
                )
            with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
                completion = await handle.completion()
            self._count_success(completion, handle)
            logprobs = None
            if body.logprobs:
                logprobs = ChatLogprobs(content=chat.chat_logprobs(completion.tokens, completion.top_tokens, top_n))
            result = ChatCompletion(
                id=_completion_id(),
                created=int(time.time()),
                model=model,
                system_fingerprint=self._fingerprint,
                choices=[
                    ChatCompletionChoice(
                        index=0,
                        message=ChatCompletionMessage(content=completion.generated_text),
                        logprobs=logprobs,
                        finish_reason=chat_finish_reason(completion.finish_reason),
                    )
                ],
                usage=_usage(completion),
            )
            return web.json_response(result.model_dump(mode="json"), headers=self._headers())

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await _parse(request, CompletionRequest)
        prompt = chat.completion_prompt(body)
        parameters = chat.completion_parameters(body, self._limits.max_top_n_tokens)
        model = body.model or self._config.model_id
        top_n = parameters.top_n_tokens or 0
        with self._slot():
            generation, valid = await self._prepare(prompt, parameters, stream=body.stream, fields=COMPLETION_FIELDS)
            handle = self._engine.submit(generation)
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return await self._completion_stream(
                    request, handle, model, include_usage=include_usage, logprobs=body.logprobs, top_n=top_n
                )
            with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
                completion = await handle.completion()
            self._count_success(completion, handle)
            head = prompt if valid.return_full_text else ""
            logprobs = None
            if body.logprobs is not None:
                logprobs = chat.completion_logprobs(completion.tokens, completion.top_tokens, top_n)
            result = TextCompletion(
                id=_completion_id("cmpl"),
                created=int(time.time()),
                model=model,
                system_fingerprint=self._fingerprint,
                choices=[
                    CompletionChoice(
                        index=0,
                        text=head + completion.generated_text,
                        logprobs=logprobs,
                        finish_reason=chat_finish_reason(completion.finish_reason),
                    )
                ],
                usage=_usage(completion),
            )
            return web.json_response(result.model_dump(mode="json"), headers=self._headers())

    async def info(self, request: web.Request) -> web.StreamResponse:
        limits = self._limits
        info = Info(
            model_id=self._config.model_id,
            model_dtype=self._config.dtype,
            model_device_type=self._config.device_type,
            max_concurrent_requests=limits.max_concurrent_requests,
            max_best_of=limits.max_best_of,
            max_stop_sequences=limits.max_stop_sequences,
            max_input_tokens=limits.max_input_tokens,
            max_total_tokens=limits.max_total_tokens,
            max_batch_size=limits.max_batch_size,
            version=self._config.version,
        )
        return web.json_response(info.model_dump(mode="json"))

    async def health(self, request: web.Request) -> web.StreamResponse:
        if not self._engine.healthy:
            raise UnhealthyError()
        return web.Response(status=200)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def models(self, request: web.Request) -> web.StreamResponse:
        model = {"id": self._config.model_id, "object": "model", "created": 0, "owned_by": "kaito"}
        return web.json_response({"object": "list", "data": [model]})

    # --- generation ---------------------------------------------------------------------------
    async def _generate(self, body: GenerateRequest, parameters: GenerateParameters) -> dict[str, Any]:
        with self._slot():
            generation, valid = await self._prepare(body.inputs, parameters, stream=False)
            handle = self._engine.submit(generation)
            with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
                completion = await handle.completion()
        self._count_success(completion, handle)
        text = body.inputs + completion.generated_text if valid.return_full_text else completion.generated_text
        details = None
        if valid.details:
            details = Details(
                finish_reason=completion.finish_reason,
                generated_tokens=completion.generated_tokens,
                seed=completion.seed,
                prefill=completion.prefill,
                tokens=completion.tokens,
                top_tokens=completion.top_tokens or None,
            )
        result: dict[str, Any] = {"generated_text": text}
        if details is not None:
            result["details"] = _details_json(details)
        return result

    async def _generate_stream(self, request: web.Request, body: GenerateRequest) -> web.StreamResponse:
        with self._slot():
            generation, valid = await self._prepare(body.inputs, body.parameters, stream=True)
            handle = self._engine.submit(generation)
            # Guarded from the response's start on: a client gone before the headers are written
            # (prepare raises) must stop its generation too.
            with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
                response = await _start_sse(request, self._headers())
                try:
                    async for event in handle.events():
                        await _send(response, self._stream_event(event, body.inputs, valid))
                        if event.completion is not None:
                            self._count_success(event.completion, handle)
                except InferenceError as err:
                    self._metrics.requests.labels(err.error_type).inc()
                    await _send(response, err.body())
            await response.write_eof()
            return response

    def _stream_event(self, event: TokenEvent, inputs: str, valid: ValidParameters) -> dict[str, Any]:
        completion = event.completion
        generated_text = None
        details = None
        if completion is not None:
            generated_text = (inputs if valid.return_full_text else "") + completion.generated_text
            if valid.details:
                details = StreamDetails(
                    finish_reason=completion.finish_reason,
                    generated_tokens=completion.generated_tokens,
                    seed=completion.seed,
                    input_length=completion.input_length,
                )
        payload = StreamResponse(
            index=event.index,
            token=event.token,
            top_tokens=event.top_tokens or None,
            generated_text=generated_text,
            details=details,
        ).model_dump(mode="json")
        if payload["top_tokens"] is None:
            del payload["top_tokens"]
        return payload

    async def _chat_stream(
        self,
        request: web.Request,
        handle: GenerationHandle,
        model: str,
        *,
        include_usage: bool,
        logprobs: bool,
        top_n: int,
    ) -> web.StreamResponse:
        completion_id, created = _completion_id(), int(time.time())

        def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> dict[str, Any]:
            return _stream_chunk(
                ChatCompletionChunk(
                    id=completion_id,
                    created=created,
                    model=model,
                    system_fingerprint=self._fingerprint,
                    choices=choices,
                    usage=usage,
                )
            )

        with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
            response = await _start_sse(request, self._headers())
            try:
                async for event in handle.events():
                    done = event.completion
                    text = "" if event.token.special else event.token.text
                    reason = chat_finish_reason(done.finish_reason) if done else None
                    token_logprobs = None
                    if logprobs:
                        token_logprobs = ChatLogprobs(
                            content=chat.chat_logprobs([event.token], [event.top_tokens], top_n)
                        )
                    choice = ChatChunkChoice(
                        index=0, delta=ChatDelta(content=text), logprobs=token_logprobs, finish_reason=reason
                    )
                    await _send(response, chunk([choice]))
                    if done is not None:
                        self._count_success(done, handle)
                        if include_usage:
                            await _send(response, chunk([], _usage(done)))
            except InferenceError as err:
                self._metrics.requests.labels(err.error_type).inc()
                await _send(response, err.body())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _completion_stream(
        self,
        request: web.Request,
        handle: GenerationHandle,
        model: str,
        *,
        include_usage: bool,
        logprobs: int | None,
        top_n: int,
    ) -> web.StreamResponse:
        completion_id, created = _completion_id("cmpl"), int(time.time())
        offset = 0

        def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> dict[str, Any]:
            return _stream_chunk(
                TextCompletion(
                    id=completion_id,
                    created=created,
                    model=model,
                    system_fingerprint=self._fingerprint,
                    choices=choices,
                    usage=usage,
                )
            )

        with _cancel_on_exit(handle, self._metrics.requests.labels("cancelled").inc):
            response = await _start_sse(request, self._headers())
            try:
                async for event in handle.events():
                    done = event.completion
                    text = "" if event.token.special else event.token.text
                    token_logprobs = None
                    if logprobs is not None:
                        token_logprobs = chat.completion_logprobs([event.token], [event.top_tokens], top_n, offset)
                    offset += len(text)
                    reason = chat_finish_reason(done.finish_reason) if done else None
                    choice = CompletionChoice(index=0, text=text, logprobs=token_logprobs, finish_reason=reason)
                    await _send(response, chunk([choice]))
                    if done is not None:
                        self._count_success(done, handle)
                        if include_usage:
                            await _send(response, chunk([], _usage(done)))
            except InferenceError as err:
                self._metrics.requests.labels(err.error_type).inc()
                await _send(response, err.body())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _prepare(
        self,
        inputs: str,
        parameters: GenerateParameters,
        *,
        stream: bool,
        add_special_tokens: bool = True,
        fields: FieldNames = TGI_FIELDS,
    ) -> tuple[GenerationInput, ValidParameters]:
        """Validate, then tokenise in a worker thread (after the character cap) so the event loop
        keeps serving while a long prompt is encoded. Errors name the route's own ``fields``."""
        valid = validate_parameters(parameters, inputs, self._limits, stream=stream, fields=fields)
        validate_input_chars(inputs, fields.inputs, self._limits)
        input_ids = await asyncio.to_thread(self._encode, inputs, add_special_tokens)
        if valid.truncate is not None:
            input_ids = input_ids[-valid.truncate :]
        if not input_ids:
            raise RequestValidationError(f"`{fields.inputs}` cannot be empty")
        max_new_tokens = validate_input_length(len(input_ids), valid.max_new_tokens, self._limits, fields)
        self._metrics.input_tokens.observe(len(input_ids))
        return GenerationInput(input_ids=input_ids, parameters=valid, max_new_tokens=max_new_tokens), valid

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold one of ``max_concurrent_requests`` places for the whole request, stream included."""
        if self._in_flight >= self._limits.max_concurrent_requests:
            raise OverloadedError()
        self._in_flight += 1
        self._metrics.in_flight.set(self._in_flight)
        try:
            yield
        finally:
            self._in_flight -= 1
            self._metrics.in_flight.set(self._in_flight)

    def _count_success(self, completion: Completion, handle: GenerationHandle) -> None:
        self._metrics.requests.labels("success").inc()
        self._metrics.generated_tokens.inc(completion.generated_tokens)
        self._metrics.request_duration.observe(time.perf_counter() - handle.submitted_at)

    def _headers(self) -> dict[str, str]:
        return {"x-compute-type": self._config.device_type}

    @property
    def _fingerprint(self) -> str:
        return f"{self._config.version}-native"

    @web.middleware
    async def _authorize(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """With an API key, every route but health and metrics needs ``Authorization: Bearer <key>``
        (TGI's ``--api-key`` rule), compared in constant time."""
        if self._expected_authorization is None or (request.path in OPEN_PATHS and request.method == "GET"):
            return await handler(request)
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, self._expected_authorization):
            return web.json_response({"error": "Unauthorized", "error_type": "unauthorized"}, status=401)
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InferenceError as err:
            self._metrics.requests.labels(err.error_type).inc()
            return web.json_response(err.body(), status=err.status)


async def _parse(request: web.Request, model: type[_Model]) -> _Model:
    raw = await request.read()
    try:
        return model.model_validate_json(raw)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}" for error in exc.errors()
        )
        raise _DeserializeError(problems) from None


class _DeserializeError(InferenceError):
    status = 422
    error_type = "validation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Failed to deserialize the JSON body into the target type: {detail}")


def _stream_chunk(chunk: ChatCompletionChunk | TextCompletion) -> dict[str, Any]:
    """One streamed chunk as JSON; ``usage`` appears only on the chunk that carries it, as OpenAI sends it."""
    return chunk.model_dump(mode="json", exclude=None if chunk.usage is not None else {"usage"})


async def _start_sse(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **headers,
        }
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
    await response.write(b"data:" + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n")


@contextlib.contextmanager
def _cancel_on_exit(handle: GenerationHandle, count_cancelled: Callable[[], None]) -> Iterator[None]:
    """Stop generating when the request ends early; a client that went away (task cancelled, write
    failed) is counted as a cancelled request, other failures by their own error type."""
    try:
        yield
    except (asyncio.CancelledError, ConnectionError):
        handle.cancel()
        count_cancelled()
        raise
    except BaseException:
        handle.cancel()
        raise


def _details_json(details: Details) -> dict[str, Any]:
    payload = details.model_dump(mode="json")
    if payload["top_tokens"] is None:
        del payload["top_tokens"]
    return payload


def _usage(completion: Completion) -> Usage:
    return Usage(
        prompt_tokens=completion.input_length,
        completion_tokens=completion.generated_tokens,
        total_tokens=completion.input_length + completion.generated_tokens,
    )


def _completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"
