"""OpenAI-style chat requests turned into a prompt and TGI generate parameters.

The prompt comes from the tokenizer's own chat template when it has one (as TGI does), else from
a plain ``role: content`` transcript ending in ``assistant:``.
"""

from __future__ import annotations

from typing import Any, Protocol

from model_images.runtime.protocol import ChatCompletionRequest, ChatMessage, GenerateParameters
from model_images.runtime.validation import InferenceError, RequestValidationError


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


def generate_parameters(request: ChatCompletionRequest) -> GenerateParameters:
    """TGI's mapping of chat fields onto generate parameters; unsupported features are refused."""
    if request.n is not None and request.n != 1:
        raise RequestValidationError("`n` != 1 is not supported")
    if request.tools:
        raise RequestValidationError("tools are not supported by this runtime")
    if request.response_format is not None:
        raise RequestValidationError("grammar is not supported")
    # Chat samples by default; temperature 0 means greedy (TGI's rule).
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
        repetition_penalty=request.repetition_penalty,
    )
