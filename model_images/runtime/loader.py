"""Loads a Hugging Face causal LM and its fast tokenizer from a local directory, never the Hub.

bf16 on CUDA (fp16 where the GPU has no bf16), float32 on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The directory does not hold a model this runtime can serve; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast
    device: torch.device
    dtype: torch.dtype

    @property
    def max_position_embeddings(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if value else None


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(directory: str | Path, device: str | None = None) -> LoadedModel:
    path = Path(directory)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not a model directory: it has no config.json")
    target = pick_device(device)
    dtype = pick_dtype(target)
    # transformers' loaders are partly untyped; the checks below establish what we rely on.
    tokenizer: Any = AutoTokenizer.from_pretrained(path, local_files_only=True)  # type: ignore[no-untyped-call]
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"{path} needs a fast tokenizer (tokenizer.json); found {type(tokenizer).__name__}")
    # Requests are encoded and decoded from two threads; settings that mutate the tokenizer
    # per call (truncation, padding) are switched off once, here, before any thread starts.
    tokenizer.backend_tokenizer.no_truncation()
    tokenizer.backend_tokenizer.no_padding()
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.to(target)
    model.eval()
    log.info("loaded %s (%s) on %s as %s", path, type(model).__name__, target, dtype)
    return LoadedModel(model=model, tokenizer=tokenizer, device=target, dtype=dtype)
