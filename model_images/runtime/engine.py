"""The continuous-batching engine: one task steps the model over whichever requests are running.

Requests queue up with :meth:`Engine.submit`. Between two model steps the engine admits waiting
requests (a prefill step that appends them to the running batch, up to ``max_batch_size``, see
:func:`admit_waiting`) and removes finished or cancelled ones, so batch membership changes at any
iteration instead of at batch boundaries. Each model step runs in the engine's own worker thread
so the event loop keeps serving HTTP while the model computes; always the same thread, because
torch's CPU kernels keep one OpenMP thread team per calling thread, and a pool rotating steps over
several threads makes several teams that compete for the cores. Only the engine task touches the
batch. Tokens reach their request through the request's :class:`GenerationHandle`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from model_images.runtime.detokenizer import IncrementalDetokenizer, TokenDecoder, decode_generated
from model_images.runtime.kv_batch import PaddedBatch
from model_images.runtime.metrics import RuntimeMetrics
from model_images.runtime.protocol import FinishReason, PrefillToken, Token
from model_images.runtime.sampling import Choice, TokenChooser, choose_tokens
from model_images.runtime.stopping import StoppingCriteria
from model_images.runtime.validation import GenerationError, InferenceError, ValidParameters

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 30.0
MAX_STEPS_PER_HANDOFF = 64
"""Decode steps the worker thread runs before handing back to the engine task (which publishes
metrics); it hands back sooner whenever a request could join or the engine stops."""


@dataclass(frozen=True)
class GenerationInput:
    """A validated request: its prompt ids and parameters."""

    input_ids: list[int]
    parameters: ValidParameters
    max_new_tokens: int


@dataclass(frozen=True)
class Completion:
    finish_reason: FinishReason
    generated_text: str
    generated_tokens: int
    seed: int | None
    input_length: int
    tokens: list[Token]
    top_tokens: list[list[Token]]
    prefill: list[PrefillToken]


@dataclass(frozen=True)
class TokenEvent:
    """One generated token; the last event of a request also carries its completion."""

    index: int
    token: Token
    top_tokens: list[Token]
    completion: Completion | None = None


@dataclass
class GenerationHandle:
    """The request's side: read tokens as they come, or cancel."""

    input_length: int
    submitted_at: float = field(default_factory=time.perf_counter)
    _queue: asyncio.Queue[TokenEvent | InferenceError] = field(default_factory=asyncio.Queue)
    cancelled: bool = False

    def cancel(self) -> None:
        """Stop generating for this request (e.g. its client went away); no more events come."""
        self.cancelled = True

    async def events(self) -> AsyncIterator[TokenEvent]:
        """Token events in order, ending with the one that has the completion; raises
        :class:`InferenceError` if the generation fails."""
        while True:
            item = await self._queue.get()
            if isinstance(item, InferenceError):
                raise item
            yield item
            if item.completion is not None:
                return

    async def completion(self) -> Completion:
        async for event in self.events():
            if event.completion is not None:
                return event.completion
        raise GenerationError("the generation ended without a result")  # unreachable by construction


@dataclass(frozen=True)
class _StepRecord:
    phase: str
    rows: int
    started: float
    seconds: float


def _deliver(deliveries: list[tuple[GenerationHandle, TokenEvent]]) -> None:
    """On the event loop: hand each token event to its request."""
    for handle, event in deliveries:
        handle._queue.put_nowait(event)


class _Sequence:
    """Engine-side state of one request. Touched only by the engine (worker thread included)."""

    def __init__(self, request: GenerationInput, handle: GenerationHandle, engine: Engine) -> None:
        self.request = request
        self.handle = handle
        self.all_ids = list(request.input_ids)
        self.chooser = TokenChooser(request.parameters.sampling, request.parameters.top_n_tokens, engine.device)
        self.criteria = StoppingCriteria(
            request.max_new_tokens, engine.eos_token_ids, request.parameters.stop_sequences
        )
        self.detokenizer = IncrementalDetokenizer(engine.decoder, request.input_ids)
        self.tokens: list[Token] = []
        self.top_tokens: list[list[Token]] = []
        self.prefill: list[PrefillToken] = []
        self.finished = False

    @property
    def wants_prefill_details(self) -> bool:
        return self.request.parameters.decoder_input_details

    def advance(self, choice: Choice, engine: Engine) -> TokenEvent:
        token = engine.token(choice.token_id, choice.logprob, self.detokenizer.push(choice.token_id))
        top = [engine.token(token_id, logprob) for token_id, logprob in choice.top_tokens]
        self.all_ids.append(choice.token_id)
        self.tokens.append(token)
        self.top_tokens.append(top)
        reason = self.criteria(choice.token_id, token.text)
        completion = None
        if reason is not None:
            self.finished = True
            generated = [t.id for t in self.tokens]
            completion = Completion(
                finish_reason=reason,
                generated_text=decode_generated(engine.decoder, self.request.input_ids, generated),
                generated_tokens=len(generated),
                seed=self.request.parameters.sampling.seed,
                input_length=len(self.request.input_ids),
                tokens=self.tokens,
                top_tokens=self.top_tokens if self.request.parameters.top_n_tokens else [],
                prefill=self.prefill,
            )
        return TokenEvent(index=len(self.tokens), token=token, top_tokens=top, completion=completion)

    def record_prefill(self, logits: torch.Tensor, engine: Engine) -> None:
        """Prompt tokens with their log-probabilities, from the prefill's per-position logits
        (the prompt sits at the last ``len(prompt)`` positions)."""
        prompt = self.request.input_ids
        positions = logits[-len(prompt) :].float().log_softmax(dim=-1)
        ids = torch.tensor(prompt[1:], dtype=torch.long, device=positions.device)
        logprobs = positions[:-1].gather(1, ids[:, None]).squeeze(1).tolist()
        self.prefill = [PrefillToken(id=prompt[0], text=engine.text(prompt[0]), logprob=None)] + [
            PrefillToken(id=token_id, text=engine.text(token_id), logprob=logprob)
            for token_id, logprob in zip(prompt[1:], logprobs, strict=True)
        ]


class Engine:
    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast,
        *,
        max_batch_size: int,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.device: torch.device = model.device
        self.decoder: TokenDecoder = tokenizer.backend_tokenizer
        self.eos_token_ids = _eos_token_ids(model, tokenizer)
        self._special_ids = frozenset(tokenizer.all_special_ids)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = next(iter(self.eos_token_ids), 0)
        self._batch = PaddedBatch(model, pad)
        self._max_batch_size = max_batch_size
        self._metrics = metrics
        self._waiting: deque[_Sequence] = deque()
        self._active: list[_Sequence] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaito-engine")

    # --- the request side ---------------------------------------------------------------------
    def submit(self, request: GenerationInput) -> GenerationHandle:
        if not self.healthy:
            raise GenerationError("the engine is not running")
        handle = GenerationHandle(input_length=len(request.input_ids))
        self._waiting.append(_Sequence(request, handle, self))
        self._wakeup.set()
        self._publish_sizes()
        return handle

    @property
    def healthy(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def queue_size(self) -> int:
        return len(self._waiting)

    @property
    def batch_size(self) -> int:
        return len(self._active)

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="kaito-runtime-engine")
            self._task.add_done_callback(self._on_exit)

    async def stop(self) -> None:
        """Stop stepping; requests still queued or running fail with a generation error."""
        if self._task is None:
            return
        # Let the running step finish (it owns the batch in its thread), then leave the loop.
        self._stopping = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._task, timeout=STOP_TIMEOUT_SECONDS)
        except (asyncio.CancelledError, TimeoutError):
            log.warning("the engine did not stop within %s s", STOP_TIMEOUT_SECONDS)
        except Exception:  # the task crashed earlier; _on_exit logged it
            pass
        self._fail_pending(GenerationError("the server is shutting down"))
        self._executor.shutdown(wait=False)

    def _fail_pending(self, error: GenerationError) -> None:
        for sequence in [*self._active, *self._waiting]:
            sequence.handle._queue.put_nowait(error)
        self._active, self._waiting = [], deque()
        self._batch.clear()

    def _on_exit(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("the engine task crashed; /health now reports unhealthy", exc_info=task.exception())
        # Nothing will step these any more: fail them rather than leave their clients waiting.
        self._fail_pending(GenerationError(f"the engine stopped: {task.exception()!r}"))

    # --- the engine task ----------------------------------------------------------------------
    async def _run(self) -> None:
        while not self._stopping:
            self._waiting = deque(s for s in self._waiting if not s.handle.cancelled)
            if not self._active and not self._waiting:
                self._publish_sizes()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            joiners: list[_Sequence] = []
            if admit_waiting(len(self._active), len(self._waiting), self._max_batch_size):
                room = self._max_batch_size - len(self._active)
                joiners = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            try:
                loop = asyncio.get_running_loop()
                records = await loop.run_in_executor(self._executor, self._steps, joiners, loop)
            except Exception as exc:  # a failed step (e.g. out of memory) fails its batch, not the server
                log.exception("model step failed; failing %d requests", len(self._active) + len(joiners))
                error = GenerationError(f"{type(exc).__name__}: {exc}")
                for sequence in {id(s): s for s in [*self._active, *joiners]}.values():
                    sequence.handle._queue.put_nowait(error)
                self._active = []
                self._batch.clear()
                continue
            for record in records:
                self._observe_step(record, joiners)

    def _steps(self, joiners: list[_Sequence], loop: asyncio.AbstractEventLoop) -> list[_StepRecord]:
        """In the worker thread: the step that admits ``joiners`` (or a decode step), then more
        decode steps for as long as the engine task has nothing to do (no request could join,
        none is stopping), up to ``MAX_STEPS_PER_HANDOFF``.

        Staying in the thread spares every token a round trip through the event loop (two thread
        switches, each a wait for a core on a busy machine), which is what made one request at a
        time slower here than a plain ``generate()`` loop. Each step's tokens still reach their
        requests at once, through ``loop.call_soon_threadsafe``.
        """
        records: list[_StepRecord] = []
        admitting = joiners
        while True:
            started = time.perf_counter()
            rows, deliveries = self._step(admitting)
            if rows:
                phase = "prefill" if admitting else "decode"
                records.append(_StepRecord(phase, rows, started, time.perf_counter() - started))
            if deliveries:
                loop.call_soon_threadsafe(_deliver, deliveries)
            admitting = []
            room = len(self._active) < self._max_batch_size
            if (
                not rows
                or not self._active
                or self._stopping
                or (self._waiting and room)
                or len(records) >= MAX_STEPS_PER_HANDOFF
            ):
                return records

    def _step(self, joiners: list[_Sequence]) -> tuple[int, list[tuple[GenerationHandle, TokenEvent]]]:
        """One model step, in the worker thread: admit ``joiners`` (prefill) or decode everyone.

        Returns how many rows the model ran on (0 when every running request was cancelled and
        none joins: nothing to run), and the events to deliver.
        """
        with torch.inference_mode():
            self._retain([i for i, s in enumerate(self._active) if not s.handle.cancelled])
            if not joiners and not self._active:
                return 0, []
            if joiners:
                first_row = self._batch.size
                all_logits = any(s.wants_prefill_details for s in joiners)
                logits = self._batch.prefill([s.request.input_ids for s in joiners], all_logits=all_logits)
                for sequence, sequence_logits in zip(joiners, logits, strict=True):
                    if sequence.wants_prefill_details:
                        sequence.record_prefill(sequence_logits, self)
                self._active.extend(joiners)
                rows, last_logits = joiners, logits[:, -1, :]
            else:
                first_row, rows, last_logits = 0, self._active, self._batch.decode()
            choices = choose_tokens(last_logits, [s.chooser for s in rows], [s.all_ids for s in rows])
            self._batch.set_next_tokens(first_row, [choice.token_id for choice in choices])
            deliveries = [(s.handle, s.advance(choice, self)) for s, choice in zip(rows, choices, strict=True)]
            self._retain([i for i, s in enumerate(self._active) if not s.finished])
        return len(rows), deliveries

    def _retain(self, rows: list[int]) -> None:
        if len(rows) != len(self._active):
            self._batch.keep(rows)
            self._active = [self._active[i] for i in rows]

    # --- helpers ------------------------------------------------------------------------------
    def text(self, token_id: int) -> str:
        return self.decoder.decode([token_id], skip_special_tokens=False)

    def token(self, token_id: int, logprob: float, text: str | None = None) -> Token:
        return Token(
            id=token_id,
            text=self.text(token_id) if text is None else text,
            logprob=logprob,
            special=token_id in self._special_ids,
        )

    def _publish_sizes(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_size.set(len(self._waiting))
            self._metrics.current_batch_size.set(len(self._active))

    def _observe_step(self, record: _StepRecord, joiners: Iterable[_Sequence]) -> None:
        if self._metrics is None:
            return
        self._metrics.step_duration.labels(record.phase).observe(record.seconds)
        if record.phase == "prefill":
            self._metrics.prefill_size.observe(record.rows)
            for sequence in joiners:
                self._metrics.queue_duration.observe(record.started - sequence.handle.submitted_at)
        else:
            self._metrics.batch_size.observe(record.rows)
        self._publish_sizes()


def admit_waiting(running: int, waiting: int, max_batch_size: int) -> bool:
    """Whether to prefill waiting requests now rather than decode the running batch: whenever
    some wait and the batch has room (vLLM's prefill-first rule).

    TGI instead lets a queue build up (1.2 times the batch, or 20 decode steps) before stalling
    the batch for a prefill. Measured here (benchmarks/runtime.py) that rule left the batch at
    about half its possible size when requests arrive one by one: each arrival waited up to 20
    steps while the prefill it was spared costs about one decode step for short prompts.
    """
    return waiting > 0 and running < max_batch_size


def _eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)
