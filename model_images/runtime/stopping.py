"""When a sequence stops: length, end-of-sequence token or a stop sequence, decided as TGI does.

Pure and incremental: the engine feeds each new token's id and text and gets back a finish reason
or None. The order of checks is TGI's: the length limit first, then EOS, then stop sequences.
"""

from __future__ import annotations

from collections.abc import Iterable

from model_images.runtime.protocol import FinishReason


class StopSequenceMatcher:
    """Finds stop sequences in text that arrives a token at a time.

    Only a tail of the text is kept: a stop sequence that straddles two tokens is still found, and
    a token whose text contains a stop sequence in its middle stops the sequence (the token is
    kept whole, as TGI keeps it).
    """

    def __init__(self, stop_sequences: Iterable[str]) -> None:
        self._stops = tuple(stop for stop in stop_sequences if stop)
        self._keep = max((len(stop) for stop in self._stops), default=1) - 1
        self._tail = ""

    def feed(self, text: str) -> str | None:
        """Add a token's text; return the stop sequence it completes, or None."""
        if not self._stops:
            return None
        window = self._tail + text
        for stop in self._stops:
            if stop in window:
                return stop
        self._tail = window[-self._keep :] if self._keep else ""
        return None


class StoppingCriteria:
    """Decides, after each generated token, whether the sequence is finished and why."""

    def __init__(self, max_new_tokens: int, eos_token_ids: Iterable[int], stop_sequences: Iterable[str]) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        self.max_new_tokens = max_new_tokens
        self._eos = frozenset(eos_token_ids)
        self._matcher = StopSequenceMatcher(stop_sequences)
        self.generated = 0

    def __call__(self, token_id: int, text: str) -> FinishReason | None:
        self.generated += 1
        if self.generated >= self.max_new_tokens:
            return "length"
        if token_id in self._eos:
            return "eos_token"
        if self._matcher.feed(text) is not None:
            return "stop_sequence"
        return None
