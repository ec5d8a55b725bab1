"""Choosing the next token for every row of a batch, each row with its own sampling parameters.

Greedy rows without penalties cost one batched argmax; rows with penalties or warpers run
transformers' logits processors on their own row, and sampling rows draw from a per-request
``torch.Generator`` so a seed reproduces the same text whatever else shares the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from model_images.runtime.validation import SamplingParams


class FrequencyPenaltyLogitsProcessor(LogitsProcessor):
    """OpenAI-style frequency penalty as TGI applies it: subtract ``penalty`` times each token's
    share of the sequence so far (prompt included)."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        counts = torch.zeros_like(scores).scatter_add_(1, input_ids, torch.ones_like(input_ids, dtype=scores.dtype))
        return scores - self.penalty * counts / input_ids.shape[1]


class PresencePenaltyLogitsProcessor(LogitsProcessor):
    """OpenAI-style presence penalty: subtract ``penalty`` once from every token that occurs in
    the sequence so far (prompt included, as the frequency penalty above counts it)."""

    def __init__(self, penalty: float) -> None:
        self.penalty = penalty

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        present = torch.zeros_like(scores).scatter_(1, input_ids, 1.0)
        return scores - self.penalty * present


@dataclass(frozen=True)
class Choice:
    token_id: int
    logprob: float
    top_tokens: list[tuple[int, float]]
    """The ``top_n`` most likely tokens and their log-probabilities (empty unless asked for)."""


class TokenChooser:
    """One request's way of picking tokens."""

    def __init__(self, params: SamplingParams, top_n_tokens: int, device: torch.device) -> None:
        self.params = params
        self.top_n_tokens = top_n_tokens
        processors = LogitsProcessorList()
        if params.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
        if params.frequency_penalty != 0.0:
            processors.append(FrequencyPenaltyLogitsProcessor(params.frequency_penalty))
        if params.presence_penalty != 0.0:
            processors.append(PresencePenaltyLogitsProcessor(params.presence_penalty))
        self.needs_history = len(processors) > 0
        """Only the penalties read the ids so far; the warpers below look at the scores alone."""
        self.generator: torch.Generator | None = None
        if params.sampling:
            if params.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(params.temperature))
            if params.top_k:
                processors.append(TopKLogitsWarper(params.top_k))
            if params.top_p < 1.0:
                processors.append(TopPLogitsWarper(params.top_p))
            if params.typical_p < 1.0:
                processors.append(TypicalLogitsWarper(params.typical_p))
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(params.seed if params.seed is not None else 0)
        self.processors = processors


def choose_tokens(
    logits: torch.Tensor, choosers: Sequence[TokenChooser], histories: Sequence[Sequence[int]]
) -> list[Choice]:
    """Pick one token per row of ``logits`` (rows, vocab).

    ``histories[i]`` holds row i's prompt and generated ids; it is read (and copied to the
    device) only for rows with a penalty, not for rows that only warp the distribution.
    Log-probabilities are those of the processed distribution, as TGI reports.
    """
    scores = logits.float()
    no_history = torch.empty((1, 0), dtype=torch.long, device=scores.device)
    for row, chooser in enumerate(choosers):
        if chooser.processors:
            ids = [list(histories[row])] if chooser.needs_history else no_history
            history = cast(torch.LongTensor, torch.as_tensor(ids, dtype=torch.long, device=scores.device))
            scores[row : row + 1] = chooser.processors(history, cast(torch.FloatTensor, scores[row : row + 1]))
    logprobs = torch.log_softmax(scores, dim=-1)
    tokens = logprobs.argmax(dim=-1)
    for row, chooser in enumerate(choosers):
        if chooser.generator is not None:
            tokens[row] = torch.multinomial(logprobs[row].exp(), 1, generator=chooser.generator)[0]
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1)
    top_n = max((chooser.top_n_tokens for chooser in choosers), default=0)
    top_ids: list[list[int]] = [[] for _ in choosers]
    top_values: list[list[float]] = [[] for _ in choosers]
    if top_n:
        values, indices = logprobs.topk(top_n, dim=-1)
        top_ids, top_values = indices.tolist(), values.tolist()
    return [
        Choice(
            token_id=token,
            logprob=logprob,
            top_tokens=list(zip(top_ids[row], top_values[row], strict=True))[: chooser.top_n_tokens],
        )
        for row, (token, logprob, chooser) in enumerate(zip(tokens.tolist(), chosen.tolist(), choosers, strict=True))
    ]
