"""Request validation and the runtime's error kinds, with TGI's messages, codes and order of checks.

Pure functions over the request models and the configured limits; the tokenizer's only part is the
input length, passed in as a number. Messages are TGI's (router/src/validation.rs and
router/src/infer), so clients that match on them keep working; the OpenAI routes' messages name
their own fields (``prompt``/``messages``, ``max_tokens``) where TGI's name ``inputs`` and
``max_new_tokens``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from model_images.runtime.protocol import GenerateParameters

DEFAULT_GENERATION_CAP: Final = 1024
"""Like TGI, a request without ``max_new_tokens`` generates at most this many tokens."""
CHARS_PER_TOKEN_CAP: Final = 32
"""The default character cap is this many characters per allowed input token: tokens of common
vocabularies are far shorter (Llama-3's longest are runs of a few dozen spaces or dashes), so a
text over the cap cannot fit ``max_input_tokens`` and is refused before the tokenizer spends time
on it. (A request with ``truncate`` may still send up to the cap and have its start cut.)"""


class InferenceError(Exception):
    """A request failure with TGI's HTTP status and ``error_type``."""

    status: int = 500
    error_type: str = "generation"

    def body(self) -> dict[str, str]:
        return {"error": str(self), "error_type": self.error_type}


class RequestValidationError(InferenceError):
    status = 422
    error_type = "validation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Input validation error: {detail}")
        self.detail = detail


class OverloadedError(InferenceError):
    status = 429
    error_type = "overloaded"

    def __init__(self) -> None:
        super().__init__("Model is overloaded")


class GenerationError(InferenceError):
    status = 424
    error_type = "generation"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Request failed during generation: {detail}")


class UnhealthyError(InferenceError):
    status = 503
    error_type = "healthcheck"

    def __init__(self) -> None:
        super().__init__("unhealthy")


@dataclass(frozen=True)
class Limits:
    """What the server accepts. Defaults follow TGI's launcher except where noted."""

    max_input_tokens: int
    max_total_tokens: int
    max_concurrent_requests: int = 128
    max_batch_size: int = 32
    """Sequences decoded together in one step; further requests wait in the queue."""
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = 1
    """Best-of sampling is not implemented, so only 1 is accepted."""
    max_input_chars: int | None = None
    """Longest prompt text accepted, checked before tokenising; None: ``CHARS_PER_TOKEN_CAP``
    times ``max_input_tokens``."""

    @property
    def input_char_cap(self) -> int:
        return self.max_input_chars or CHARS_PER_TOKEN_CAP * self.max_input_tokens

    def __post_init__(self) -> None:
        if self.max_input_tokens < 1:
            raise ValueError("max_input_tokens must be at least 1")
        if self.max_total_tokens <= self.max_input_tokens:
            raise ValueError(
                f"max_total_tokens ({self.max_total_tokens}) must be greater than "
                f"max_input_tokens ({self.max_input_tokens})"
            )
        if self.max_concurrent_requests < 1 or self.max_batch_size < 1:
            raise ValueError("max_concurrent_requests and max_batch_size must be at least 1")
        if self.max_input_chars is not None and self.max_input_chars < 1:
            raise ValueError("max_input_chars must be at least 1")


@dataclass(frozen=True)
class FieldNames:
    """What the route calls the prompt and the generation cap, so that an error names the field
    the client sent: TGI's own names on TGI's routes, OpenAI's on the OpenAI routes."""

    inputs: str = "inputs"
    max_new_tokens: str = "max_new_tokens"


TGI_FIELDS: Final = FieldNames()
COMPLETION_FIELDS: Final = FieldNames(inputs="prompt", max_new_tokens="max_tokens")
CHAT_FIELDS: Final = FieldNames(inputs="messages", max_new_tokens="max_tokens")


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``sampling`` is False for greedy decoding."""

    sampling: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class ValidParameters:
    sampling: SamplingParams
    stop_sequences: tuple[str, ...]
    max_new_tokens: int | None
    """None: fill the room left after the input (capped), known once the input is tokenised."""
    truncate: int | None
    details: bool
    decoder_input_details: bool
    return_full_text: bool
    top_n_tokens: int


def validate_parameters(
    parameters: GenerateParameters,
    inputs: str,
    limits: Limits,
    *,
    stream: bool,
    rng: random.Random | None = None,
    fields: FieldNames = TGI_FIELDS,
) -> ValidParameters:
    """Check a request's parameters in TGI's order; raise RequestValidationError on the first problem.

    Sampling is on when ``do_sample`` is set or any warper differs from its neutral value (TGI's
    server rule). A sampling request without a seed gets a random one, reported back in details.
    """
    p = parameters
    if stream and p.best_of is not None and p.best_of != 1:
        raise RequestValidationError("`best_of` != 1 is not supported when streaming tokens")
    if stream and p.decoder_input_details:
        raise RequestValidationError("`decoder_input_details` == true is not supported when streaming tokens")
    if p.best_of is not None and p.best_of != 1:
        if limits.max_best_of == 1:
            raise RequestValidationError("`best_of` != 1 is not allowed for this endpoint")
        raise RequestValidationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {p.best_of}")
    temperature = 1.0 if p.temperature is None else p.temperature
    if temperature <= 0.0:
        raise RequestValidationError("`temperature` must be strictly positive")
    repetition_penalty = 1.0 if p.repetition_penalty is None else p.repetition_penalty
    if repetition_penalty <= 0.0:
        raise RequestValidationError("`repetition_penalty` must be strictly positive")
    frequency_penalty = 0.0 if p.frequency_penalty is None else p.frequency_penalty
    if not -2.0 <= frequency_penalty <= 2.0:
        raise RequestValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    presence_penalty = 0.0 if p.presence_penalty is None else p.presence_penalty
    if not -2.0 <= presence_penalty <= 2.0:
        raise RequestValidationError("`presence_penalty` must be >= -2.0 and <= 2.0")
    if p.top_p is not None and not 0.0 < p.top_p < 1.0:
        raise RequestValidationError("`top_p` must be > 0.0 and < 1.0")
    if p.typical_p is not None and not 0.0 < p.typical_p < 1.0:
        raise RequestValidationError("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise RequestValidationError("`top_k` must be strictly positive")
    if p.max_new_tokens is not None and p.max_new_tokens <= 0:
        raise RequestValidationError(f"`{fields.max_new_tokens}` must be strictly positive")
    if len(p.stop) > limits.max_stop_sequences:
        raise RequestValidationError(
            f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(p.stop)}"
        )
    if any(not stop for stop in p.stop):
        raise RequestValidationError("`stop` sequences cannot be empty")
    top_n_tokens = p.top_n_tokens or 0
    if not 0 <= top_n_tokens <= limits.max_top_n_tokens:
        raise RequestValidationError(
            f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n_tokens}"
        )
    if not inputs:
        raise RequestValidationError(f"`{fields.inputs}` cannot be empty")
    if p.truncate is not None and not 0 < p.truncate <= limits.max_input_tokens:
        raise RequestValidationError(
            f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {p.truncate}"
        )
    if p.grammar is not None:
        raise RequestValidationError("grammar is not supported")
    if p.watermark:
        raise RequestValidationError("`watermark` is not supported by this runtime")
    if p.adapter_id:
        raise RequestValidationError("`adapter_id` is not supported by this runtime: it serves no adapters")

    top_k = p.top_k or 0
    top_p = 1.0 if p.top_p is None else p.top_p
    typical_p = 1.0 if p.typical_p is None else p.typical_p
    sampling = p.do_sample or temperature != 1.0 or top_k != 0 or top_p < 1.0 or typical_p < 1.0
    seed = p.seed
    if sampling and seed is None:
        seed = (rng or random.SystemRandom()).getrandbits(63)
    return ValidParameters(
        sampling=SamplingParams(
            sampling=sampling,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            typical_p=typical_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            seed=seed if sampling else None,
        ),
        stop_sequences=tuple(p.stop),
        max_new_tokens=p.max_new_tokens,
        truncate=p.truncate,
        details=p.details,
        decoder_input_details=p.decoder_input_details,
        return_full_text=bool(p.return_full_text),
        top_n_tokens=top_n_tokens,
    )


def validate_input_chars(text: str, field: str, limits: Limits) -> None:
    """Refuse a prompt text longer than the character cap, before it is tokenised."""
    cap = limits.input_char_cap
    if len(text) > cap:
        raise RequestValidationError(f"`{field}` must have at most {cap} characters. Given: {len(text)}")


def validate_input_length(
    input_length: int, max_new_tokens: int | None, limits: Limits, fields: FieldNames = TGI_FIELDS
) -> int:
    """Check the tokenised input against the limits; return the effective ``max_new_tokens``."""
    inputs, cap = fields.inputs, fields.max_new_tokens
    if max_new_tokens is None:
        max_new_tokens = min(max(limits.max_total_tokens - input_length, 0), DEFAULT_GENERATION_CAP)
    if input_length + max_new_tokens > limits.max_total_tokens:
        raise RequestValidationError(
            f"`{inputs}` tokens + `{cap}` must be <= {limits.max_total_tokens}. "
            f"Given: {input_length} `{inputs}` tokens and {max_new_tokens} `{cap}`"
        )
    if input_length > limits.max_input_tokens:
        raise RequestValidationError(
            f"`{inputs}` must have less than {limits.max_input_tokens} tokens. Given: {input_length}"
        )
    if max_new_tokens <= 0:
        # Only reachable without an explicit max_new_tokens: the input fills the whole budget.
        raise RequestValidationError(f"`{cap}` must be strictly positive")
    return max_new_tokens
