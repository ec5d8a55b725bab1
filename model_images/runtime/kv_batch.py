"""The running batch's KV cache: rows join and leave between model steps, tokens stay correct.

Layout: one ``DynamicCache`` shared by all rows, left-padded so each row's real tokens are the
last ``lengths[row]`` columns. Padding columns are masked out by the attention mask, and each row
gets its own position ids (its count of real tokens), so a row computes exactly what it would
compute alone. Joining rows are prefilled as their own left-padded batch and concatenated on the
batch axis after padding both caches to the same width; leaving rows are dropped and the columns
that only padding uses any more are cut, so the cache never grows past the longest live row.

This module is the only place that knows how transformers stores a cache (``cache.layers[i]``
with ``keys``/``values`` of shape (batch, kv_heads, columns, head_dim), transformers 4.56+).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache, PreTrainedModel

_LayerTensors = list[tuple[torch.Tensor, torch.Tensor]]


def _cache_tensors(cache: DynamicCache) -> _LayerTensors:
    tensors = []
    for layer in cache.layers:
        if layer.keys is None or layer.values is None:
            raise RuntimeError("a cache layer has no keys or values; this model's cache type is not supported")
        tensors.append((layer.keys, layer.values))
    return tensors


def _cache_from(tensors: _LayerTensors) -> DynamicCache:
    cache = DynamicCache()
    for index, (keys, values) in enumerate(tensors):
        cache.update(keys, values, index)
    return cache


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    return F.pad(tensor, (0, 0, missing, 0)) if missing else tensor


class PaddedBatch:
    """Rows of a decoder-only model's batch, each with its cached tokens and its next input token."""

    def __init__(self, model: PreTrainedModel, pad_token_id: int) -> None:
        self._model = model
        self._device = model.device
        self._pad_token_id = pad_token_id
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.clear()

    def clear(self) -> None:
        self._cache: DynamicCache | None = None
        self._lengths = torch.zeros(0, dtype=torch.long, device=self._device)
        self._next_tokens = torch.zeros(0, dtype=torch.long, device=self._device)

    @property
    def size(self) -> int:
        return int(self._lengths.shape[0])

    @property
    def width(self) -> int:
        """Cache columns, padding included."""
        return 0 if self._cache is None else self._cache.get_seq_length()

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
        all_logits: bool,
    ) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if self._takes_logits_to_keep and not all_logits else {}
        output = self._model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        logits: torch.Tensor = output.logits
        return logits if all_logits else logits[:, -1:, :]

    def prefill(self, prompts: Sequence[Sequence[int]], *, all_logits: bool = False) -> torch.Tensor:
        """Run the prompts and append them as new rows at the end of the batch.

        Returns logits of shape (prompts, columns, vocab), where columns is 1 unless
        ``all_logits``; each prompt's last token is at the last column. The new rows have no
        next token until :meth:`set_next_tokens`.
        """
        width = max(len(prompt) for prompt in prompts)
        lengths = torch.tensor([len(prompt) for prompt in prompts], dtype=torch.long, device=self._device)
        input_ids = torch.full((len(prompts), width), self._pad_token_id, dtype=torch.long, device=self._device)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask = self._mask(lengths, width)
        positions = (torch.arange(width, device=self._device)[None, :] - (width - lengths)[:, None]).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(input_ids, mask, positions, cache, all_logits)
        self._append(cache, lengths)
        return logits

    def decode(self) -> torch.Tensor:
        """One step for every row: feed each row's next token; returns logits (rows, vocab)."""
        if self._cache is None or self.size == 0:
            raise RuntimeError("decode() on an empty batch")
        width = self.width + 1
        mask = self._mask(self._lengths + 1, width)
        logits = self._forward(self._next_tokens[:, None], mask, self._lengths[:, None], self._cache, all_logits=False)
        self._lengths = self._lengths + 1
        return logits[:, -1, :]

    def set_next_tokens(self, first_row: int, tokens: Sequence[int]) -> None:
        """Set the next input token of rows ``first_row``, ``first_row + 1``, ..."""
        self._next_tokens[first_row : first_row + len(tokens)] = torch.tensor(
            list(tokens), dtype=torch.long, device=self._device
        )

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order) and cut columns no kept row uses."""
        if not rows:
            self.clear()
            return
        if self._cache is None:
            raise RuntimeError("keep() on an empty batch")
        if list(rows) == list(range(self.size)):
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self._device)
        self._lengths = self._lengths[index]
        self._next_tokens = self._next_tokens[index]
        start = self.width - int(self._lengths.max())
        self._cache = _cache_from(
            [(keys[index, :, start:, :], values[index, :, start:, :]) for keys, values in _cache_tensors(self._cache)]
        )

    def _append(self, cache: DynamicCache, lengths: torch.Tensor) -> None:
        if self._cache is None or self.size == 0:
            self._cache = cache
        else:
            width = max(self.width, cache.get_seq_length())
            self._cache = _cache_from(
                [
                    (
                        torch.cat([_left_pad(old_keys, width), _left_pad(new_keys, width)]),
                        torch.cat([_left_pad(old_values, width), _left_pad(new_values, width)]),
                    )
                    for (old_keys, old_values), (new_keys, new_values) in zip(
                        _cache_tensors(self._cache), _cache_tensors(cache), strict=True
                    )
                ]
            )
        self._lengths = torch.cat([self._lengths, lengths])
        self._next_tokens = torch.cat([self._next_tokens, torch.zeros_like(lengths)])

    def _mask(self, lengths: torch.Tensor, width: int) -> torch.Tensor:
        columns = torch.arange(width, device=self._device)[None, :]
        return (columns >= (width - lengths)[:, None]).long()
