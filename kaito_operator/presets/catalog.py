"""The preset models: one record per Kaito v0.1 preset, holding what TGI needs to serve it and what
placement needs to fit it. The image build matrix (model_images) and the workload renderer
(workspace) both read this module and nothing else, so a preset is defined exactly once.

Memory figures are GiB. ``min_*`` follow Kaito v0.1's published requirements; ``weights_gib`` is
the bf16/fp16 checkpoint size (2 bytes per parameter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from kaito_operator.api.workspace import PRESET_NAMES

WEIGHTS_PATH: Final = "/workspace/weights"
"""Where every model image holds its weights; the operator passes it to TGI as ``--model-id``."""

DEFAULT_REGISTRY: Final = "ghcr.io/kaito-py"
TGI_IMAGE: Final = "ghcr.io/huggingface/text-generation-inference:3.3.6"
"""The pinned TGI release the model images are built on."""


@dataclass(frozen=True)
class Preset:
    name: str
    family: Literal["falcon", "llama-2"]
    model_id: str
    """Hugging Face repository the weights come from."""
    revision: str | None
    """Pinned commit of ``model_id``; None for gated models that users build themselves."""
    access: Literal["public", "private"]
    """public: we publish the image. private: gated weights, users build and host the image."""
    params_billion: float
    dtype: Literal["bfloat16", "float16"]
    min_gpu_count: int
    min_gpu_memory_per_gpu_gib: int
    min_total_gpu_memory_gib: int
    disk_gib: int
    """OS disk the node needs (image with weights plus unpack room); the Machine's storage request."""
    max_input_tokens: int
    max_total_tokens: int
    chat: bool
    image_tag: str = "0.1.0"
    max_num_shard: int | None = None
    """Largest tensor-parallel degree TGI accepts for this model (None: any)."""

    @property
    def weights_gib(self) -> float:
        return round(self.params_billion * 2 * 1e9 / 2**30, 1)

    @property
    def startup_seconds(self) -> int:
        """Time allowed for TGI to load the weights and warm up before the pod counts as failed.

        Loading runs at a few hundred MiB/s from local disk plus warm-up; allow 10 s per GiB with a
        5-minute floor, so 70B models get ~25 minutes, 7B models 5.
        """
        return max(300, int(self.weights_gib * 10))

    def image(self, registry: str = DEFAULT_REGISTRY) -> str:
        return f"{registry.rstrip('/')}/kaito-{self.name}:{self.image_tag}"


def _falcon(name: str, model_id: str, revision: str, size: Literal[7, 40], chat: bool) -> Preset:
    small = size == 7
    return Preset(
        name=name,
        family="falcon",
        model_id=model_id,
        revision=revision,
        access="public",
        params_billion=7.2 if small else 41.8,
        dtype="bfloat16",
        min_gpu_count=1 if small else 2,
        min_gpu_memory_per_gpu_gib=0,
        min_total_gpu_memory_gib=15 if small else 90,
        disk_gib=50 if small else 400,  # Kaito v0.1 wrote "400" without a unit (400 bytes)
        max_input_tokens=1024,
        max_total_tokens=2048,
        chat=chat,
        # Falcon-7B has 71 attention heads (a prime), which TGI cannot split across GPUs.
        max_num_shard=1 if small else None,
    )


def _llama(name: str, size: Literal[7, 13, 70], chat: bool) -> Preset:
    needs = {7: (1, 14, 14, 34, 6.7), 13: (2, 15, 30, 46, 13.0), 70: (8, 19, 152, 158, 69.0)}
    gpus, per_gpu, total, disk, params = needs[size]
    suffix = "-chat-hf" if chat else "-hf"
    return Preset(
        name=name,
        family="llama-2",
        model_id=f"meta-llama/Llama-2-{size}b{suffix}",
        revision=None,
        access="private",
        params_billion=params,
        dtype="float16",
        min_gpu_count=gpus,
        min_gpu_memory_per_gpu_gib=per_gpu,
        min_total_gpu_memory_gib=total,
        disk_gib=disk,
        max_input_tokens=3072,
        max_total_tokens=4096,
        chat=chat,
    )


_ALL: Final = [
    _falcon("falcon-7b", "tiiuae/falcon-7b", "ec89142b67d748a1865ea4451372db8313ada0d8", 7, False),
    _falcon("falcon-7b-instruct", "tiiuae/falcon-7b-instruct", "8782b5c5d8c9290412416618f36a133653e85285", 7, True),
    _falcon("falcon-40b", "tiiuae/falcon-40b", "4a70170c215b36a3cce4b4253f6d0612bb7d4146", 40, False),
    _falcon(
        "falcon-40b-instruct",
        "tiiuae/falcon-40b-instruct",
        "ecb78d97ac356d098e79f0db222c9ce7c5d9ee5f",
        40,
        True,
    ),
    _llama("llama-2-7b", 7, False),
    _llama("llama-2-7b-chat", 7, True),
    _llama("llama-2-13b", 13, False),
    _llama("llama-2-13b-chat", 13, True),
    _llama("llama-2-70b", 70, False),
    _llama("llama-2-70b-chat", 70, True),
]

PRESETS: Final[dict[str, Preset]] = {p.name: p for p in _ALL}
if tuple(PRESETS) != PRESET_NAMES:
    raise RuntimeError(f"the catalogue lists {tuple(PRESETS)} but the Workspace API allows {PRESET_NAMES}")


def get(name: str) -> Preset:
    """The preset called ``name`` (case-insensitive, as Kaito's webhook lowercases it)."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise KeyError(f"Unsupported preset name {name}; supported: {', '.join(PRESETS)}") from None
