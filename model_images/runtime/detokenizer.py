"""Turns generated token ids into text one token at a time, so streamed pieces add up to the whole.

Decoding a token alone loses context (sentencepiece-style tokenizers drop a leading space, byte
tokenizers may hold half a character), so each step decodes a short window ending at the new
token and emits only what the window adds; a token that ends in an incomplete character emits
nothing until a later token completes it. This is the scheme TGI and vLLM use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

_CONTEXT_TOKENS: Final = 5
_INCOMPLETE: Final = "\ufffd"


class TokenDecoder(Protocol):
    """The part of a ``tokenizers.Tokenizer`` this module needs."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, decoder: TokenDecoder, prompt_ids: Sequence[int]) -> None:
        self._decoder = decoder
        self._ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self._prefix = 0
        self._read = len(self._ids)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it adds (possibly empty)."""
        self._ids.append(token_id)
        before = self._decoder.decode(self._ids[self._prefix : self._read], skip_special_tokens=False)
        after = self._decoder.decode(self._ids[self._prefix :], skip_special_tokens=False)
        if len(after) > len(before) and not after.endswith(_INCOMPLETE):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""


def decode_generated(decoder: TokenDecoder, prompt_ids: Sequence[int], generated_ids: Sequence[int]) -> str:
    """The generated text without special tokens, decoded with one prompt token of context so a
    leading space survives."""
    context = list(prompt_ids[-1:])
    head = decoder.decode(context, skip_special_tokens=True)
    whole = decoder.decode(context + list(generated_ids), skip_special_tokens=True)
    return whole[len(head) :] if whole.startswith(head) else decoder.decode(list(generated_ids))
