"""dtype, shards and token limits per VM size, with expected values worked out by hand from the
models' published config.json numbers and the GPUs' published memory (not from the code).

Worked figures use the documented estimate (presets.serving): usable = 0.9 x GPU GiB x shards,
minus 2 bytes per parameter; KV bytes/token = 2 x layers x KV heads x head_dim x 2; the budget
holds 4 full-length requests; totals round down to a multiple of 1024 and stop at the context.
"""

from __future__ import annotations

import pytest

from kaito_operator.presets.catalog import get
from kaito_operator.presets.serving import tgi_settings
from kaito_operator.vm_sizes import SKUS


@pytest.mark.parametrize(
    ("instance_type", "bf16"),
    [
        ("Standard_NC12s_v3", False),  # V100, compute capability 7.0
        ("Standard_NC4as_T4_v3", False),  # T4, 7.5
        ("Standard_NC6", False),  # K80, 3.7
        ("Standard_NC6s_v2", False),  # P100, 6.0
        ("Standard_ND6s", False),  # P40, 6.1
        ("Standard_NV6", False),  # M60, 5.2
        ("Standard_NC24ads_A100_v4", True),  # A100, 8.0
        ("Standard_NV36ads_A10_v5", True),  # A10, 8.6
        ("Standard_ND96isr_H100_v5", True),  # H100, 9.0
    ],
)
def test_bfloat16_only_where_the_gpu_has_it(instance_type: str, bf16: bool) -> None:
    assert SKUS[instance_type].supports_bf16 is bf16
    expected = "bfloat16" if bf16 else "float16"
    assert tgi_settings(get("qwen2.5-7b-instruct"), instance_type).dtype == expected


def test_llama_3_1_8b_on_one_a10() -> None:
    # A10: 24 GiB. usable 0.9 x 24 GiB = 23,192,823,398 B; weights 8.03e9 x 2 = 16.06e9 B;
    # left 7,132,823,398 B. KV/token: 2 x 32 layers x 8 KV heads x 128 x 2 B = 131,072 B
    # -> 54,419 tokens; / 4 = 13,604 -> 13,312 (13 x 1024).
    settings = tgi_settings(get("llama-3.1-8b-instruct"), "Standard_NV36ads_A10_v5")
    assert (settings.dtype, settings.num_shard) == ("bfloat16", 1)
    assert (settings.max_input_tokens, settings.max_total_tokens) == (13311, 13312)


def test_phi_3_5_mini_on_a_t4_runs_in_float16() -> None:
    # T4: 16 GiB. usable 15,461,882,265 B; weights 3.82e9 x 2 = 7.64e9 B; left 7,821,882,265 B.
    # KV/token: 2 x 32 x 32 KV heads x 96 x 2 B = 393,216 B -> 19,892 tokens; / 4 = 4,973 -> 4,096.
    settings = tgi_settings(get("phi-3.5-mini-instruct"), "Standard_NC4as_T4_v3")
    assert (settings.dtype, settings.num_shard, settings.max_total_tokens) == ("float16", 1, 4096)


def test_llama_3_3_70b_on_eight_a100s_reaches_its_context_length() -> None:
    # 8 x 80 GiB: usable 618,475,290,624 B; weights 141.2e9 B; left 477.3e9 B; KV/token
    # 2 x 80 x 8 x 128 x 2 = 327,680 B -> 1,456,528 tokens; / 4 = 364,132 > 131,072 (the context).
    settings = tgi_settings(get("llama-3.3-70b-instruct"), "Standard_ND96amsr_A100_v4")
    assert (settings.dtype, settings.num_shard, settings.max_total_tokens) == ("bfloat16", 8, 131072)
    assert settings.max_input_tokens == 131071


def test_shards_divide_the_heads() -> None:
    # Qwen2.5-7B: 28 heads, 4 KV heads -> 8 GPUs cannot split them; 4 can.
    assert tgi_settings(get("qwen2.5-7b-instruct"), "Standard_ND96amsr_A100_v4").num_shard == 4
    # phi-4: 40 heads, 10 KV heads -> of 1..8 GPUs, 5 is the most that divides both.
    assert tgi_settings(get("phi-4"), "Standard_ND96amsr_A100_v4").num_shard == 5
    # Phi-3.5-mini: 32 and 32 -> all 4 GPUs of an NC96ads_A100_v4.
    assert tgi_settings(get("phi-3.5-mini-instruct"), "Standard_NC96ads_A100_v4").num_shard == 4
    # Falcon-7B (v0.1, 71 heads) stays on one GPU.
    assert tgi_settings(get("falcon-7b"), "Standard_NC24s_v3").num_shard == 1


def test_the_context_length_caps_the_total() -> None:
    # Mistral-7B v0.3 on an H100 NVL (94 GiB): far more KV room than its 32,768 positions.
    assert tgi_settings(get("mistral-7b-instruct-v0.3"), "Standard_NC40ads_H100_v5").max_total_tokens == 32768


def test_v0_1_presets_and_unknown_sizes_keep_the_fixed_limits() -> None:
    falcon = tgi_settings(get("falcon-7b"), "Standard_NC24ads_A100_v4")
    assert (falcon.max_input_tokens, falcon.max_total_tokens, falcon.dtype) == (1024, 2048, "bfloat16")
    unknown = tgi_settings(get("llama-3.1-8b-instruct"), "Standard_NC999_unknown")
    # TGI's defaults: min(context, 4096) total, one less for input.
    assert (unknown.max_input_tokens, unknown.max_total_tokens, unknown.num_shard) == (4095, 4096, 1)
