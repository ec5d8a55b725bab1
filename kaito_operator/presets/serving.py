"""How TGI serves a preset on a given VM size: dtype, shards and token limits. Pure functions.

- **dtype**: the preset's own (bf16 for current checkpoints) where the GPU computes bfloat16,
  float16 where it does not (V100, T4, P100, P40, M60, K80; see ``vm_sizes``).
- **shards** (``--num-shard``): every GPU of the node, reduced to the largest count that divides
  both the attention heads and the KV heads (TGI splits heads evenly over the shards), and to
  ``max_num_shard`` where the preset sets it.
- **token limits** (``--max-total-tokens`` / ``--max-input-tokens``), for presets that state their
  architecture: the KV cache that fits in the GPU memory the shards leave after the weights,
  estimated conservatively (below), shared by ``FULL_LENGTH_REQUESTS`` requests of full length,
  rounded down to a multiple of 1024 and capped by the model's context length; input is one
  less than total (TGI's own relation). Kaito v0.1's presets, and any preset on a VM size the
  table does not know, keep the preset's fixed limits.

The estimate: usable memory is ``MEMORY_FRACTION`` of the shards' GPU memory (the rest for the
CUDA context, NCCL buffers and activations); the weights take 2 bytes per parameter; one token's
KV cache takes ``2 (K and V) x layers x KV heads x head_dim x 2 bytes``. TGI measures the real
free memory at warm-up and fails clearly if these limits do not fit, so erring low is the safe
side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kaito_operator.presets.catalog import Preset
from kaito_operator.vm_sizes import GpuSku, lookup

MEMORY_FRACTION: Final = 0.9
FULL_LENGTH_REQUESTS: Final = 4
"""The KV budget must hold this many requests of ``max_total_tokens`` at once."""
TOKEN_STEP: Final = 1024
MIN_TOTAL_TOKENS: Final = 256
"""Floor when the memory left is very small (the preset barely fits); below it TGI is not useful."""


@dataclass(frozen=True)
class TgiSettings:
    dtype: str
    num_shard: int
    max_input_tokens: int
    max_total_tokens: int


def serving_dtype(preset: Preset, sku: GpuSku | None) -> str:
    if sku is not None and not sku.supports_bf16:
        return "float16"
    return preset.dtype


def shard_count(preset: Preset, gpus: int) -> int:
    """The most shards (up to ``gpus``) that split the model's heads evenly."""
    limit = max(1, gpus if preset.max_num_shard is None else min(gpus, preset.max_num_shard))
    if preset.shape is None:
        return limit
    heads, kv_heads = preset.shape.num_attention_heads, preset.shape.num_key_value_heads
    return next(n for n in range(limit, 0, -1) if heads % n == 0 and kv_heads % n == 0)


def kv_cache_tokens(preset: Preset, sku: GpuSku, shards: int) -> int | None:
    """Tokens of KV cache that fit beside the weights on ``shards`` GPUs of ``sku`` (None without
    an architecture)."""
    if preset.shape is None:
        return None
    usable = MEMORY_FRACTION * sku.gpu_memory_gib * 2**30 * shards
    left = usable - preset.params_billion * 1e9 * 2
    return max(0, int(left // preset.shape.kv_bytes_per_token))


def token_limits(preset: Preset, sku: GpuSku | None, shards: int) -> tuple[int, int]:
    """(max_input_tokens, max_total_tokens) for TGI on ``shards`` GPUs of ``sku``."""
    tokens = kv_cache_tokens(preset, sku, shards) if sku is not None else None
    if tokens is None or preset.shape is None:
        return preset.max_input_tokens, preset.max_total_tokens
    per_request = tokens // FULL_LENGTH_REQUESTS
    total = per_request // TOKEN_STEP * TOKEN_STEP if per_request >= TOKEN_STEP else per_request
    total = max(MIN_TOTAL_TOKENS, min(total, preset.shape.context_length))
    return total - 1, total


def tgi_settings(preset: Preset, instance_type: str) -> TgiSettings:
    sku = lookup(instance_type)
    gpus = sku.gpu_count if sku is not None else max(1, preset.min_gpu_count)
    shards = shard_count(preset, gpus)
    max_input, max_total = token_limits(preset, sku, shards)
    return TgiSettings(serving_dtype(preset, sku), shards, max_input, max_total)
