"""Getting a preset's weights (huggingface_hub, at a pinned revision) and refusing broken ones.

The check reads only file names, sizes and safetensors headers, so it takes milliseconds even
for 140 GB of weights, and it reports every problem it finds at once.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kaito_operator.presets.catalog import Preset

WEIGHT_PATTERNS: Final = ("*.safetensors", "*.json", "*.jinja", "tokenizer.model", "*.txt", "*.py", "*.tiktoken")
"""What an image needs from a model repository; PyTorch ``.bin`` duplicates are left behind."""

TOKENIZER_FILES: Final = ("tokenizer.json", "tokenizer.model", "tokenizer.tiktoken")
SIZE_TOLERANCE: Final = 0.25
"""Accept weights within ±25% of the size the preset's parameter count implies."""
DOWNLOAD_TIMEOUT_SECONDS: Final = 60
_MAX_HEADER_BYTES: Final = 100 * 2**20
_GIB: Final = 2**30


class WeightsError(Exception):
    """The weights cannot be used; ``problems`` says why, one line each."""

    def __init__(self, directory: Path, problems: Sequence[str]) -> None:
        self.directory = directory
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"the weights in {directory} cannot be used:\n{lines}")


class DownloadError(Exception):
    """Downloading the weights failed; the message says what to do."""


@dataclass(frozen=True)
class WeightsReport:
    directory: Path
    safetensors: list[Path]
    total_bytes: int
    tokenizer: str

    @property
    def total_gib(self) -> float:
        return self.total_bytes / _GIB


def check_weights(directory: Path, *, expected_gib: float | None = None, label: str = "the preset") -> WeightsReport:
    """Check that ``directory`` holds a loadable Hugging Face checkpoint for TGI.

    Required: ``config.json`` (valid JSON), at least one ``*.safetensors`` file, each non-empty
    with an intact header (and every shard the index lists), and a tokenizer. With
    ``expected_gib``, the safetensors must total within ±25% of it. Raises :class:`WeightsError`
    listing every problem.
    """
    if not directory.is_dir():
        raise WeightsError(directory, [f"{directory} is not a directory"])
    problems: list[str] = []

    config = directory / "config.json"
    if not config.is_file():
        problems.append("config.json is missing (TGI reads the model's architecture from it)")
    else:
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"config.json is not valid JSON: {exc}")

    safetensors = sorted(directory.glob("*.safetensors"))
    if not safetensors:
        others = sorted(p.name for p in directory.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt"})
        hint = f" (found {', '.join(others)}: convert them to safetensors first)" if others else ""
        problems.append(f"no *.safetensors files: TGI loads weights only from safetensors{hint}")
    for path in safetensors:
        problem = _safetensors_problem(path)
        if problem:
            problems.append(problem)
    problems.extend(_missing_shards(directory))

    tokenizer = next((name for name in TOKENIZER_FILES if (directory / name).is_file()), None)
    if tokenizer is None and (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        tokenizer = "vocab.json"
    if tokenizer is None:
        problems.append(f"no tokenizer: expected one of {', '.join(TOKENIZER_FILES)}")

    total = sum(path.stat().st_size for path in safetensors)
    if expected_gib is not None and safetensors and not problems:
        actual = total / _GIB
        if abs(actual - expected_gib) > SIZE_TOLERANCE * expected_gib:
            problems.append(
                f"the safetensors files hold {actual:.2f} GiB but {label} needs about {expected_gib:.1f} GiB "
                "(its parameter count in 16-bit); these look like other weights (--skip-size-check accepts them)"
            )
    if problems:
        raise WeightsError(directory, problems)
    return WeightsReport(directory=directory, safetensors=safetensors, total_bytes=total, tokenizer=tokenizer or "")


def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (format: 8-byte little-endian header
    length, a JSON header whose tensors' ``data_offsets`` index into the bytes after it)."""
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty (0 bytes)"
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{path.name} is not a safetensors file: only {size} bytes"
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > min(_MAX_HEADER_BYTES, size - 8):
                return f"{path.name} is not a safetensors file: its header length ({header_length}) is impossible"
            header = json.loads(handle.read(header_length))
    except (OSError, ValueError) as exc:
        return f"{path.name} is not a safetensors file: {exc}"
    if not isinstance(header, dict):
        return f"{path.name} is not a safetensors file: the header is not a JSON object"
    ends = [
        int(entry["data_offsets"][1])
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    data_bytes = size - 8 - header_length
    if ends and max(ends) > data_bytes:
        return f"{path.name} is truncated: its tensors need {max(ends)} bytes of data, the file has {data_bytes}"
    return None


def _missing_shards(directory: Path) -> list[str]:
    index = directory / "model.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except ValueError as exc:
        return [f"{index.name} is not valid JSON: {exc}"]
    shards = sorted(set(weight_map.values()))
    return [f"{shard} is listed in {index.name} but missing" for shard in shards if not (directory / shard).is_file()]


def resolve_main_commit(preset: Preset, token: str | None) -> str:
    """The commit ``main`` of ``preset.model_id`` points to now: the pin for a preset the catalogue
    does not pin, so the image records exactly which weights it holds."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = HfApi().model_info(preset.model_id, revision="main", token=token, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    except (HfHubHTTPError, OSError) as exc:
        raise DownloadError(f"finding the current commit of {preset.model_id} failed: {exc}") from exc
    if not info.sha:
        raise DownloadError(f"the Hub reported no commit for {preset.model_id}")
    return info.sha


def download_weights(preset: Preset, revision: str, destination: Path, token: str | None) -> Path:
    """Download ``preset``'s repository at ``revision`` (the files in WEIGHT_PATTERNS) into
    ``destination``; return it. Gated repositories need ``token`` (HF_TOKEN) with access."""
    # Read timeout for each HTTP read of the download; huggingface_hub's default is 10 s.
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(DOWNLOAD_TIMEOUT_SECONDS))
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(
            repo_id=preset.model_id,
            revision=revision,
            local_dir=destination,
            allow_patterns=list(WEIGHT_PATTERNS),
            token=token,
            etag_timeout=DOWNLOAD_TIMEOUT_SECONDS,
        )
    except GatedRepoError as exc:
        raise DownloadError(
            f"{preset.model_id} is gated: accept its licence on huggingface.co with your account and set "
            f"HF_TOKEN to a token of that account ({exc.server_message or exc})"
        ) from exc
    except RevisionNotFoundError as exc:
        raise DownloadError(f"{preset.model_id} has no revision {revision}") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadError(
            f"{preset.model_id} was not found (or is private and HF_TOKEN does not grant access)"
        ) from exc
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise DownloadError(f"downloading {preset.model_id}@{revision} failed: {exc}") from exc
    return Path(path)
