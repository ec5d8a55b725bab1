"""The batching engine in-process on the tiny model: rows joining and leaving a running batch get
exactly the tokens (and log-probabilities) the model gives each sequence alone."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

pytestmark = pytest.mark.runtime

torch = pytest.importorskip("torch")

from model_images.runtime.detokenizer import IncrementalDetokenizer, decode_generated  # noqa: E402
from model_images.runtime.engine import MAX_STEPS_PER_HANDOFF, Completion, Engine, GenerationInput  # noqa: E402
from model_images.runtime.loader import LoadedModel, load_model  # noqa: E402
from model_images.runtime.metrics import RuntimeMetrics  # noqa: E402
from model_images.runtime.protocol import GenerateParameters  # noqa: E402
from model_images.runtime.serve import running  # noqa: E402
from model_images.runtime.validation import GenerationError, Limits, validate_parameters  # noqa: E402

LIMITS = Limits(max_input_tokens=64, max_total_tokens=128)


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir, device="cpu")


@pytest.fixture
async def engine(tiny: LoadedModel) -> AsyncIterator[Engine]:
    engine = Engine(tiny.model, tiny.tokenizer, max_batch_size=3, metrics=RuntimeMetrics())
    await engine.start()
    yield engine
    await engine.stop()


def request(tiny: LoadedModel, prompt: str, max_new_tokens: int, **parameters: Any) -> GenerationInput:
    valid = validate_parameters(GenerateParameters(**parameters), prompt, LIMITS, stream=False)
    ids = tiny.tokenizer.backend_tokenizer.encode(prompt).ids
    return GenerationInput(input_ids=ids, parameters=valid, max_new_tokens=max_new_tokens)


def assert_matches_model_alone(tiny: LoadedModel, prompt_ids: list[int], completion: Completion) -> None:
    """Every generated token is the greedy choice, with the log-probability, that one forward pass
    over this sequence alone (no cache, no padding) gives."""
    generated = [token.id for token in completion.tokens]
    with torch.inference_mode():
        logits = tiny.model(torch.tensor([prompt_ids + generated])).logits[0].float()
    logprobs = logits.log_softmax(dim=-1)
    for step, token in enumerate(completion.tokens):
        row = logprobs[len(prompt_ids) - 1 + step]
        assert row[token.id] >= row.max() - 1e-4, f"token {step} is not the greedy choice"
        assert token.logprob == pytest.approx(row[token.id].item(), abs=1e-4)


async def test_rows_joining_and_leaving_get_the_same_tokens_as_alone(engine: Engine, tiny: LoadedModel) -> None:
    # Five requests through a batch of three: rows finish at different steps and the waiting
    # ones join a batch that is already decoding, at a different cache width.
    specs = [
        ("The", 3),
        ("The weather today is mild with", 9),
        ("A cat", 5),
        ("Once upon a time there", 12),
        ("GPU", 7),
    ]
    inputs = [request(tiny, prompt, n) for prompt, n in specs]
    handles = [engine.submit(i) for i in inputs]
    completions = await asyncio.wait_for(asyncio.gather(*(h.completion() for h in handles)), timeout=60)

    for generation, completion, (_, max_new) in zip(inputs, completions, specs, strict=True):
        assert completion.generated_tokens == len(completion.tokens) <= max_new
        if completion.finish_reason == "length":
            assert completion.generated_tokens == max_new
        assert_matches_model_alone(tiny, generation.input_ids, completion)
    assert engine.batch_size == 0 and engine.queue_size == 0


async def test_seeded_sampling_is_the_same_alone_and_in_a_batch(engine: Engine, tiny: LoadedModel) -> None:
    seeded = request(tiny, "A cat sat", 10, do_sample=True, seed=7, top_k=50, top_p=0.9, temperature=0.8)
    alone = await asyncio.wait_for(engine.submit(seeded).completion(), timeout=30)

    others = [engine.submit(request(tiny, f"The dog {i}", 10, do_sample=True)) for i in range(2)]
    together = await asyncio.wait_for(engine.submit(seeded).completion(), timeout=30)
    await asyncio.wait_for(asyncio.gather(*(o.completion() for o in others)), timeout=30)

    assert [t.id for t in together.tokens] == [t.id for t in alone.tokens]
    assert together.seed == alone.seed == 7


async def test_cancelled_request_leaves_the_batch(
    engine: Engine, tiny: LoadedModel, caplog: pytest.LogCaptureFixture
) -> None:
    handle = engine.submit(request(tiny, "Once upon a time", 100))
    received = 0
    async for _ in handle.events():
        received += 1
        if received == 2:
            break
    handle.cancel()
    deadline = time.monotonic() + 10
    while engine.batch_size:
        assert time.monotonic() < deadline, "the cancelled request is still in the batch"
        await asyncio.sleep(0.01)
    # The engine carries on serving.
    done = await asyncio.wait_for(engine.submit(request(tiny, "The", 2)).completion(), timeout=30)
    assert done.generated_tokens == 2
    # Emptying the batch is not a failed model step (no decode over zero rows).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_failed_step_fails_its_requests_and_the_engine_recovers(engine: Engine, tiny: LoadedModel) -> None:
    batch = engine._batch
    real_prefill = batch.prefill

    def failing_prefill(*args: Any, **kwargs: Any) -> Any:
        batch.prefill = real_prefill  # type: ignore[method-assign]  # fail once only
        raise RuntimeError("CUDA out of memory")

    batch.prefill = failing_prefill  # type: ignore[method-assign]
    with pytest.raises(GenerationError, match="Request failed during generation: RuntimeError: CUDA out of memory"):
        await asyncio.wait_for(engine.submit(request(tiny, "The", 4)).completion(), timeout=30)
    assert engine.healthy
    done = await asyncio.wait_for(engine.submit(request(tiny, "The", 4)).completion(), timeout=30)
    assert done.generated_tokens >= 1


async def test_overloaded_when_max_concurrent_requests_are_in_flight(tiny: LoadedModel) -> None:
    limits = Limits(max_input_tokens=64, max_total_tokens=128, max_concurrent_requests=1)
    timeout = aiohttp.ClientTimeout(total=60)
    async with running(tiny, limits, model_id="tiny") as url, aiohttp.ClientSession(timeout=timeout) as session:
        body = {"inputs": "Once upon a time", "parameters": {"max_new_tokens": 60}}
        async with session.post(f"{url}/generate_stream", json=body) as stream:
            await stream.content.readline()  # the first event: the request holds its place
            async with session.post(f"{url}/generate", json=body) as second:
                assert second.status == 429
                assert await second.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
            rest = await stream.content.read()
            assert b'"generated_text":"' in rest
        async with session.post(f"{url}/generate", json=body) as third:
            assert third.status == 200


def test_streamed_pieces_add_up_to_the_generated_text(tiny: LoadedModel) -> None:
    decoder = tiny.tokenizer.backend_tokenizer
    prompt = decoder.encode("The weather").ids
    generator = torch.Generator().manual_seed(3)
    generated = torch.randint(4, len(tiny.tokenizer), (40,), generator=generator).tolist()
    detokenizer = IncrementalDetokenizer(decoder, prompt)

    pieces = [detokenizer.push(token) for token in generated]

    assert "".join(pieces) == decode_generated(decoder, prompt, generated)
    assert pieces[0].startswith(" ") or not decoder.id_to_token(generated[0]).startswith("\u2581")


async def test_a_crashed_engine_fails_its_requests_instead_of_leaving_them_waiting(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(tiny.model, tiny.tokenizer, max_batch_size=3)
    await engine.start()

    def crash(*args: Any) -> None:
        raise RuntimeError("bug outside the model step")

    # _observe_step runs in the loop, outside the guarded model step.
    monkeypatch.setattr(engine, "_observe_step", crash)
    # Longer than one hand-off of decode steps, so the requests are still running when it crashes.
    handles = [engine.submit(request(tiny, "The", MAX_STEPS_PER_HANDOFF + 20)) for _ in range(2)]
    for handle in handles:
        with pytest.raises(GenerationError, match="the engine stopped"):
            await asyncio.wait_for(handle.completion(), timeout=30)
    assert not engine.healthy
    await asyncio.wait_for(engine.stop(), timeout=30)  # does not raise the crash again


def test_only_penalised_rows_read_their_history() -> None:
    from model_images.runtime.sampling import TokenChooser, choose_tokens
    from model_images.runtime.validation import SamplingParams

    class Unread(list[int]):
        def __iter__(self) -> Any:
            raise AssertionError("a row without penalties copied its history to the device")

    warped = TokenChooser(SamplingParams(sampling=True, temperature=0.7, top_k=3, seed=1), 0, torch.device("cpu"))
    penalised = TokenChooser(SamplingParams(repetition_penalty=2.0), 0, torch.device("cpu"))
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]])
    choices = choose_tokens(logits, [warped, penalised], [Unread([0, 3]), [3]])
    assert choices[0].token_id in {1, 2, 3}  # top_k=3 was applied
    assert choices[1].token_id == 2  # the repetition penalty read [3] and pushed token 3 below token 2
