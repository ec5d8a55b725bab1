"""The preset models: one record per preset, holding what TGI needs to serve it and what placement
needs to fit it. The image build matrix (model_images) and the workload renderer (workspace) both
read this module and nothing else, so a preset is defined exactly once.

Kaito v0.1's ten presets (falcon, llama-2) keep their records. The current models (llama-3.x,
mistral v0.3, phi-3.5/4, qwen2.5) carry their architecture (:class:`ModelShape`) from the model's
published ``config.json``, which the renderer uses for ``--num-shard`` and the KV-cache estimate
behind ``--max-total-tokens``; docs/presets.md lists where every number comes from.

Memory figures are GiB. For v0.1 presets ``min_*`` follow Kaito v0.1's published requirements;
for the current ones ``min_total_gpu_memory_gib`` is the weights plus 20 % (KV cache and
activations), rounded up, and ``disk_gib`` twice the weights (image layer plus unpacking) plus
20 GiB for the TGI image. ``weights_gib`` is the bf16/fp16 checkpoint size (2 bytes/parameter).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from kaito_operator.api.workspace import PRESET_NAMES

WEIGHTS_PATH: Final = "/workspace/weights"
"""Where every model image holds its weights; the operator passes it to TGI as ``--model-id``."""

DEFAULT_REGISTRY: Final = "ghcr.io/kaito-py"
TGI_IMAGE: Final = "ghcr.io/huggingface/text-generation-inference:3.3.6"
"""The pinned TGI release the model images are built on."""


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers serving depends on, as the model's ``config.json`` states them."""

    num_layers: int
    """``num_hidden_layers``"""
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    """``hidden_size / num_attention_heads`` (or ``head_dim`` where the config gives it)"""
    context_length: int
    """``max_position_embeddings``: the longest sequence TGI serves without extra rope scaling."""

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV cache one token takes in 16-bit precision: keys and values, every layer."""
        return 2 * self.num_layers * self.num_key_value_heads * self.head_dim * 2


@dataclass(frozen=True)
class Preset:
    name: str
    family: Literal["falcon", "llama-2", "llama-3", "mistral", "phi", "qwen2.5"]
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
    shape: ModelShape | None = None
    """Architecture; None for Kaito v0.1's presets, which keep their fixed token limits."""
    license: str = ""
    """The Hugging Face licence tag of ``model_id``."""

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


def _current(
    name: str,
    family: Literal["llama-3", "mistral", "phi", "qwen2.5"],
    model_id: str,
    *,
    params_billion: float,
    shape: ModelShape,
    license: str,
    gated: bool,
    min_gpu_count: int = 1,
) -> Preset:
    """A current model. ``revision`` is None: the commit to build is chosen at build time
    (``kaito images build --revision``), since a pin can only be taken from the Hub itself."""
    weights_gib = params_billion * 2 * 1e9 / 2**30
    return Preset(
        name=name,
        family=family,
        model_id=model_id,
        revision=None,
        access="private" if gated else "public",
        params_billion=params_billion,
        dtype="bfloat16",  # every one of these checkpoints is published in bf16
        min_gpu_count=min_gpu_count,
        min_gpu_memory_per_gpu_gib=0,
        min_total_gpu_memory_gib=math.ceil(weights_gib * 1.2),
        disk_gib=math.ceil(weights_gib * 2) + 20,
        # TGI's own defaults (min(context, 4096), input one less); the renderer raises them from
        # the GPU memory of the instance type when it knows the SKU.
        max_input_tokens=min(shape.context_length, 4096) - 1,
        max_total_tokens=min(shape.context_length, 4096),
        chat=True,
        shape=shape,
        license=license,
    )


# Sources (config.json and model card of each repository on huggingface.co):
# meta-llama/Llama-3.1-8B-Instruct: 32 layers, 32 heads, 8 KV heads, hidden 4096, max_position_embeddings
#   131072; 8.03 B parameters; licence llama3.1; gated (Meta's licence must be accepted).
# meta-llama/Llama-3.3-70B-Instruct: 80 layers, 64 heads, 8 KV heads, hidden 8192, 131072 positions
#   (128k context per the card); 70.6 B parameters; licence llama3.3; gated.
# meta-llama/Llama-3.2-3B-Instruct: 28 layers, 24 heads, 8 KV heads, head_dim 128, 131072 positions;
#   3.21 B parameters; licence llama3.2; gated.
# mistralai/Mistral-7B-Instruct-v0.3: 32 layers, 32 heads, 8 KV heads, hidden 4096, 32768 positions,
#   vocab 32768; 7.25 B parameters; licence apache-2.0.
# microsoft/Phi-3.5-mini-instruct: 32 layers, 32 heads, 32 KV heads, hidden 3072, 131072 positions;
#   3.82 B parameters; licence mit.
# microsoft/phi-4: 40 layers, 40 heads, 10 KV heads, hidden 5120, 16384 positions; 14.7 B parameters;
#   licence mit.
# Qwen/Qwen2.5-7B-Instruct and Qwen/Qwen2.5-Coder-7B-Instruct: 28 layers, 28 heads, 4 KV heads,
#   hidden 3584, 32768 positions (131072 only with YaRN rope scaling added to the config); 7.61 B
#   parameters; licence apache-2.0.
_CURRENT: Final = [
    _current(
        "llama-3.1-8b-instruct",
        "llama-3",
        "meta-llama/Llama-3.1-8B-Instruct",
        params_billion=8.03,
        shape=ModelShape(32, 32, 8, 128, 131072),
        license="llama3.1",
        gated=True,
    ),
    _current(
        "llama-3.2-3b-instruct",
        "llama-3",
        "meta-llama/Llama-3.2-3B-Instruct",
        params_billion=3.21,
        shape=ModelShape(28, 24, 8, 128, 131072),
        license="llama3.2",
        gated=True,
    ),
    _current(
        "llama-3.3-70b-instruct",
        "llama-3",
        "meta-llama/Llama-3.3-70B-Instruct",
        params_billion=70.6,
        shape=ModelShape(80, 64, 8, 128, 131072),
        license="llama3.3",
        gated=True,
        min_gpu_count=2,
    ),
    _current(
        "mistral-7b-instruct-v0.3",
        "mistral",
        "mistralai/Mistral-7B-Instruct-v0.3",
        params_billion=7.25,
        shape=ModelShape(32, 32, 8, 128, 32768),
        license="apache-2.0",
        gated=False,
    ),
    _current(
        "phi-3.5-mini-instruct",
        "phi",
        "microsoft/Phi-3.5-mini-instruct",
        params_billion=3.82,
        shape=ModelShape(32, 32, 32, 96, 131072),
        license="mit",
        gated=False,
    ),
    _current(
        "phi-4",
        "phi",
        "microsoft/phi-4",
        params_billion=14.7,
        shape=ModelShape(40, 40, 10, 128, 16384),
        license="mit",
        gated=False,
    ),
    _current(
        "qwen2.5-7b-instruct",
        "qwen2.5",
        "Qwen/Qwen2.5-7B-Instruct",
        params_billion=7.61,
        shape=ModelShape(28, 28, 4, 128, 32768),
        license="apache-2.0",
        gated=False,
    ),
    _current(
        "qwen2.5-coder-7b-instruct",
        "qwen2.5",
        "Qwen/Qwen2.5-Coder-7B-Instruct",
        params_billion=7.61,
        shape=ModelShape(28, 28, 4, 128, 32768),
        license="apache-2.0",
        gated=False,
    ),
]

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
    *_CURRENT,
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
