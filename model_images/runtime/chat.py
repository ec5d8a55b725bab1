"""OpenAI-style chat and completions requests turned into a prompt and TGI generate parameters,
and generated tokens into OpenAI's log-probability shapes.

The chat prompt comes from the tokenizer's own chat template when it has one (as TGI does), else
from a plain ``role: content`` transcript ending in ``assistant:``. Every OpenAI field is either
mapped or refused with a 422 naming it; none is silently ignored.
"""

from __future__ import annotations

from typing import Any, Protocol

from model_images.runtime.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    ChatTokenLogprob,
    CompletionLogprobs,
    CompletionRequest,
    GenerateParameters,
    Token,
    TopLogprob,
)
from model_images.runtime.validation import InferenceError, RequestValidationError

MAX_OPENAI_TOP_LOGPROBS = 20
"""OpenAI's own upper bound for ``top_logprobs``; this server's ``max_top_n_tokens`` may be lower."""


class TemplateError(InferenceError):
    status = 422
    error_type = "template_error"

    def __init__(self, detail: str) -> None:
        super().__init__(f"Template error: {detail}")


class ChatTokenizer(Protocol):
    chat_template: str | None

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


def message_text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts = []
    for part in message.content:
        if part.type != "text" or part.text is None:
            raise RequestValidationError(f"content of type {part.type!r} is not supported: this runtime reads text")
        texts.append(part.text)
    return "".join(texts)


def render_prompt(tokenizer: ChatTokenizer, request: ChatCompletionRequest) -> tuple[str, bool]:
    """The prompt text, and whether the tokenizer must still add its special tokens (only the
    fallback transcript needs them; a chat template writes its own)."""
    if not request.messages:
        raise RequestValidationError("`messages` cannot be empty")
    conversation = [{"role": m.role, "content": message_text(m)} for m in request.messages]
    if tokenizer.chat_template:
        try:
            prompt = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except Exception as exc:  # jinja2 raises TemplateError and plain exceptions via raise_exception()
            raise TemplateError(str(exc)) from exc
        return str(prompt), False
    transcript = "".join(f"{turn['role']}: {turn['content']}\n" for turn in conversation)
    return transcript + "assistant:", True


def _top_n(field: str, value: int | None, max_top_n_tokens: int) -> int:
    top_n = value or 0
    limit = min(MAX_OPENAI_TOP_LOGPROBS, max_top_n_tokens)
    if not 0 <= top_n <= limit:
        raise RequestValidationError(f"`{field}` must be >= 0 and <= {limit}. Given: {top_n}")
    return top_n


def _openai_parameters(
    request: ChatCompletionRequest | CompletionRequest, top_n_tokens: int, details: bool
) -> GenerateParameters:
    """The sampling fields both OpenAI routes share, mapped as TGI maps them."""
    if request.n is not None and request.n != 1:
        raise RequestValidationError("`n` != 1 is not supported")
    if request.logit_bias:
        raise RequestValidationError("`logit_bias` is not supported by this runtime")
    # OpenAI routes sample by default; temperature 0 means greedy (TGI's rule).
    greedy = request.temperature is not None and request.temperature == 0.0
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    return GenerateParameters(
        do_sample=not greedy,
        temperature=None if greedy else request.temperature,
        # OpenAI clients send top_p=1 to mean "no nucleus filter", which TGI's check would refuse.
        top_p=None if request.top_p == 1.0 else request.top_p,
        seed=request.seed,
        stop=stop,
        max_new_tokens=request.max_tokens,
        frequency_penalty=request.frequency_penalty,
        presence_penalty=request.presence_penalty,
        repetition_penalty=request.repetition_penalty,
        top_n_tokens=top_n_tokens or None,
        details=details,
    )


def generate_parameters(request: ChatCompletionRequest, max_top_n_tokens: int = 5) -> GenerateParameters:
    """TGI's mapping of chat fields onto generate parameters; unsupported features are refused.

    ``logprobs: true`` reports each generated token's log-probability, ``top_logprobs`` (which
    needs ``logprobs``) the most likely alternatives at each position, up to ``max_top_n_tokens``.
    """
    if request.tools:
        raise RequestValidationError("tools are not supported by this runtime")
    if request.response_format is not None:
        raise RequestValidationError("grammar is not supported")
    if request.top_logprobs is not None and not request.logprobs:
        raise RequestValidationError("`top_logprobs` needs `logprobs` to be true")
    top_n = _top_n("top_logprobs", request.top_logprobs, max_top_n_tokens)
    return _openai_parameters(request, top_n, details=bool(request.logprobs))


def completion_prompt(request: CompletionRequest) -> str:
    """The one prompt of a completions request (a list must hold exactly one)."""
    if isinstance(request.prompt, str):
        return request.prompt
    if len(request.prompt) != 1:
        raise RequestValidationError(f"`prompt` must be one string; a list of {len(request.prompt)} is not supported")
    return request.prompt[0]


def completion_parameters(request: CompletionRequest, max_top_n_tokens: int = 5) -> GenerateParameters:
    """Completions fields onto generate parameters: ``logprobs: N`` reports the chosen token and
    the N most likely ones at each position; ``echo`` puts the prompt in front of the text."""
    if request.best_of is not None and request.best_of != 1:
        raise RequestValidationError("`best_of` != 1 is not supported")
    if request.suffix:
        raise RequestValidationError("`suffix` is not supported by this runtime")
    if request.echo and request.stream:
        raise RequestValidationError("`echo` is not supported when streaming")
    if request.echo and request.logprobs is not None:
        raise RequestValidationError("`echo` together with `logprobs` is not supported")
    top_n = _top_n("logprobs", request.logprobs, max_top_n_tokens)
    parameters = _openai_parameters(request, top_n, details=request.logprobs is not None)
    parameters.return_full_text = request.echo
    return parameters


def _logprob(token: Token) -> float:
    return token.logprob if token.logprob is not None else 0.0


def _alternatives(chosen: Token, top: list[Token], top_n: int) -> list[Token]:
    """The top list, with the chosen token under the same text as the chosen one: the chosen
    token's text is the piece it adds to the output (a leading space included), where an
    alternative's is that token decoded alone."""
    return [chosen.model_copy(update={"logprob": t.logprob}) if t.id == chosen.id else t for t in top[:top_n]]


def chat_logprobs(tokens: list[Token], top_tokens: list[list[Token]], top_n: int) -> list[ChatTokenLogprob]:
    """OpenAI chat's ``logprobs.content`` entries for generated tokens (special tokens included,
    as their text is what the model chose)."""
    return [
        ChatTokenLogprob(
            token=token.text,
            logprob=_logprob(token),
            bytes=list(token.text.encode()),
            top_logprobs=[
                TopLogprob(token=t.text, logprob=_logprob(t), bytes=list(t.text.encode()))
                for t in _alternatives(token, top_tokens[i] if i < len(top_tokens) else [], top_n)
            ],
        )
        for i, token in enumerate(tokens)
    ]


def completion_logprobs(
    tokens: list[Token], top_tokens: list[list[Token]], top_n: int, offset: int = 0
) -> CompletionLogprobs:
    """The legacy completions' parallel lists; ``text_offset`` counts characters from ``offset``."""
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token.text)
    top_logprobs = None
    if top_n:
        top_logprobs = [
            {t.text: _logprob(t) for t in _alternatives(token, top_tokens[i] if i < len(top_tokens) else [], top_n)}
            for i, token in enumerate(tokens)
        ]
    return CompletionLogprobs(
        tokens=[token.text for token in tokens],
        token_logprobs=[token.logprob for token in tokens],
        top_logprobs=top_logprobs,
        text_offset=offsets,
    )
