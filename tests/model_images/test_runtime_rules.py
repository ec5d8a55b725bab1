"""The runtime's pure rules, without a model or server: parameter validation with TGI's messages,
stop sequences and finish reasons, chat parameter mapping and the container command contract."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from model_images.runtime.chat import TemplateError, generate_parameters, render_prompt
from model_images.runtime.command import runtime_container_command
from model_images.runtime.protocol import ChatCompletionRequest, GenerateParameters
from model_images.runtime.stopping import StoppingCriteria, StopSequenceMatcher
from model_images.runtime.validation import (
    DEFAULT_GENERATION_CAP,
    Limits,
    OverloadedError,
    RequestValidationError,
    validate_input_length,
    validate_parameters,
)

LIMITS = Limits(max_input_tokens=100, max_total_tokens=200)


def check(stream: bool = False, inputs: str = "hi", **parameters: object) -> object:
    return validate_parameters(GenerateParameters.model_validate(parameters), inputs, LIMITS, stream=stream)


# --- parameter validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 0.0}, "`temperature` must be strictly positive"),
        ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
        ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"typical_p": 1.5}, "`typical_p` must be > 0.0 and < 1.0"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"max_new_tokens": -3}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
        ({"best_of": 2}, "`best_of` != 1 is not allowed for this endpoint"),
        ({"truncate": 101}, "`truncate` must be strictly positive and less than 100. Given: 101"),
        ({"grammar": {"type": "regex", "value": "a+"}}, "grammar is not supported"),
    ],
)
def test_invalid_parameters_get_tgi_messages(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        check(**parameters)
    assert str(caught.value) == f"Input validation error: {message}"
    assert caught.value.status == 422
    assert caught.value.body() == {"error": f"Input validation error: {message}", "error_type": "validation"}


def test_checks_run_in_tgi_order() -> None:
    # Both are wrong; TGI reports the temperature first and the empty input last.
    with pytest.raises(RequestValidationError, match="temperature"):
        check(inputs="", temperature=-1.0)
    with pytest.raises(RequestValidationError, match="`inputs` cannot be empty"):
        check(inputs="")


def test_streaming_refuses_prefill_details_and_best_of() -> None:
    with pytest.raises(RequestValidationError, match="`decoder_input_details` == true is not supported when streaming"):
        check(stream=True, decoder_input_details=True)
    with pytest.raises(RequestValidationError, match="`best_of` != 1 is not supported when streaming tokens"):
        check(stream=True, best_of=3)


def test_sampling_is_on_when_any_warper_is_set_and_gets_a_seed() -> None:
    greedy = validate_parameters(GenerateParameters(), "hi", LIMITS, stream=False)
    assert not greedy.sampling.sampling and greedy.sampling.seed is None

    for parameters in ({"do_sample": True}, {"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9}, {"typical_p": 0.5}):
        valid = validate_parameters(
            GenerateParameters.model_validate(parameters), "hi", LIMITS, stream=False, rng=random.Random(1)
        )
        assert valid.sampling.sampling, parameters
        assert valid.sampling.seed == random.Random(1).getrandbits(63)

    seeded = validate_parameters(GenerateParameters(do_sample=True, seed=9), "hi", LIMITS, stream=False)
    assert seeded.sampling.seed == 9


def test_input_length_limits() -> None:
    assert validate_input_length(10, 190, LIMITS) == 190
    with pytest.raises(RequestValidationError) as caught:
        validate_input_length(10, 191, LIMITS)
    assert (
        caught.value.detail
        == "`inputs` tokens + `max_new_tokens` must be <= 200. Given: 10 `inputs` tokens and 191 `max_new_tokens`"
    )
    with pytest.raises(RequestValidationError, match=r"`inputs` must have less than 100 tokens. Given: 101"):
        validate_input_length(101, 5, LIMITS)


def test_missing_max_new_tokens_fills_the_room_up_to_the_cap() -> None:
    assert validate_input_length(90, None, LIMITS) == 110
    big = Limits(max_input_tokens=100, max_total_tokens=4096)
    assert validate_input_length(10, None, big) == DEFAULT_GENERATION_CAP


def test_limits_refuse_an_input_limit_that_leaves_no_room() -> None:
    with pytest.raises(ValueError, match="must be greater than"):
        Limits(max_input_tokens=200, max_total_tokens=200)


def test_overloaded_error_shape() -> None:
    error = OverloadedError()
    assert (error.status, error.body()) == (429, {"error": "Model is overloaded", "error_type": "overloaded"})


# --- stopping -------------------------------------------------------------------------------------
def test_stop_sequence_straddling_tokens_is_found() -> None:
    matcher = StopSequenceMatcher(["###"])
    assert [matcher.feed(text) for text in ["a #", "#", "# b"]] == [None, None, "###"]


def test_stop_sequence_inside_one_token_is_found() -> None:
    assert StopSequenceMatcher(["stop"]).feed("nonstopping") == "stop"


def test_text_before_the_window_is_forgotten() -> None:
    matcher = StopSequenceMatcher(["ab"])
    assert matcher.feed("a") is None
    assert matcher.feed("x") is None
    assert matcher.feed("b") is None  # "a" and "b" are not adjacent


def test_finish_reasons_in_tgi_order() -> None:
    eos = 2
    criteria = StoppingCriteria(max_new_tokens=3, eos_token_ids=[eos], stop_sequences=["end"])
    assert criteria(10, " the") is None
    assert criteria(11, " end") == "stop_sequence"

    criteria = StoppingCriteria(max_new_tokens=3, eos_token_ids=[eos], stop_sequences=[])
    assert criteria(10, "a") is None
    assert criteria(eos, "</s>") == "eos_token"

    # At the length limit, the limit wins even if the last token is EOS (TGI checks length first).
    criteria = StoppingCriteria(max_new_tokens=2, eos_token_ids=[eos], stop_sequences=["x"])
    assert criteria(10, "a") is None
    assert criteria(eos, "x") == "length"


def test_max_new_tokens_of_one_finishes_at_once() -> None:
    assert StoppingCriteria(1, [], [])(5, "a") == "length"


# --- chat -----------------------------------------------------------------------------------------
def chat_request(**fields: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "hi"}], **fields})


def test_chat_samples_unless_temperature_is_zero() -> None:
    assert generate_parameters(chat_request()).do_sample
    greedy = generate_parameters(chat_request(temperature=0, max_tokens=7, stop="END", seed=3))
    assert (greedy.do_sample, greedy.temperature, greedy.max_new_tokens, greedy.stop, greedy.seed) == (
        False,
        None,
        7,
        ["END"],
        3,
    )
    assert generate_parameters(chat_request(top_p=1.0)).top_p is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 2}, "`n` != 1 is not supported"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools are not supported"),
        ({"response_format": {"type": "json_object"}}, "grammar is not supported"),
    ],
)
def test_chat_refuses_what_it_cannot_do(fields: dict[str, object], message: str) -> None:
    with pytest.raises(RequestValidationError, match=message):
        generate_parameters(chat_request(**fields))


class TemplateTokenizer:
    def __init__(self, template: str | None, fail: bool = False) -> None:
        self.chat_template = template
        self.fail = fail

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: object) -> str:
        if self.fail:
            raise ValueError("Conversation roles must alternate user/assistant/user/assistant/...")
        assert kwargs == {"tokenize": False, "add_generation_prompt": True}
        return "<s>" + "|".join(turn["content"] for turn in conversation)


def test_prompt_from_the_tokenizer_template_or_a_fallback() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ]
        }
    )
    assert render_prompt(TemplateTokenizer("{{ x }}"), request) == ("<s>be brief|hi", False)
    assert render_prompt(TemplateTokenizer(None), request) == ("system: be brief\nuser: hi\nassistant:", True)
    with pytest.raises(TemplateError) as caught:
        render_prompt(TemplateTokenizer("{{ x }}", fail=True), request)
    assert caught.value.body()["error_type"] == "template_error"


# --- the container command ------------------------------------------------------------------------
def test_runtime_container_command() -> None:
    command = runtime_container_command("/workspace/weights", 5000, 1024, 2048)
    assert command == [
        "/opt/kaito-runtime/bin/python",
        "-m",
        "model_images.runtime",
        "serve",
        "--model",
        "/workspace/weights",
        "--host",
        "0.0.0.0",
        "--port",
        "5000",
        "--max-input-tokens",
        "1024",
        "--max-total-tokens",
        "2048",
    ]
    with pytest.raises(ValueError, match="max_input_tokens < max_total_tokens"):
        runtime_container_command("/m", 80, 2048, 2048)


def test_the_container_command_parses_with_the_runtime_cli() -> None:
    import argparse

    from model_images.cli import add_runtime_commands

    parser = argparse.ArgumentParser()
    add_runtime_commands(parser.add_subparsers(dest="cmd", required=True), lambda module, function: lambda args: 0)
    args = parser.parse_args(runtime_container_command("/workspace/weights", 80, 1024, 2048)[3:])
    assert (args.model, args.host, args.port, args.max_input_tokens, args.max_total_tokens) == (
        "/workspace/weights",
        "0.0.0.0",
        80,
        1024,
        2048,
    )


# --- admission --------------------------------------------------------------------------------------
def test_waiting_requests_join_whenever_the_batch_has_room() -> None:
    from model_images.runtime.engine import admit_waiting

    assert not admit_waiting(running=0, waiting=0, max_batch_size=4)
    assert admit_waiting(running=0, waiting=1, max_batch_size=4)
    assert admit_waiting(running=3, waiting=1, max_batch_size=4)  # one arrival does not wait for company
    assert not admit_waiting(running=4, waiting=5, max_batch_size=4)  # full: they wait for a place


def test_presence_penalty_subtracts_once_per_token_present() -> None:
    import torch

    from model_images.runtime.sampling import PresencePenaltyLogitsProcessor

    scores = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    # Token 3 occurs twice and token 1 once: each loses the penalty exactly once (OpenAI's definition).
    penalised = PresencePenaltyLogitsProcessor(0.5)(torch.tensor([[3, 3, 1]]), scores)
    assert penalised.tolist() == [[0.0, 0.5, 2.0, 2.5]]


# --- requests that end early ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raised", "counted"),
    [(asyncio.CancelledError(), 1), (ConnectionResetError(), 1), (ValueError("a generation error"), 0)],
)
async def test_a_request_ending_early_stops_its_generation_and_only_hang_ups_count_as_cancelled(
    raised: BaseException, counted: int
) -> None:
    from model_images.runtime.engine import GenerationHandle
    from model_images.runtime.server import _cancel_on_exit

    handle = GenerationHandle(input_length=3)
    cancellations: list[None] = []
    with pytest.raises(type(raised)), _cancel_on_exit(handle, lambda: cancellations.append(None)):
        raise raised
    assert handle.cancelled
    assert len(cancellations) == counted
