"""Named verdicts of the fit check (Kaito v0.1's examples and SKUs at the edges)."""

from __future__ import annotations

import pytest

from kaito_operator.presets.catalog import PRESETS, get
from kaito_operator.presets.fit import check_fit, unsupported_instance_type
from kaito_operator.vm_sizes import SKUS


def test_every_preset_fits_on_some_sku_with_one_node() -> None:
    for preset in PRESETS.values():
        assert any(not check_fit(preset, sku, 1) for sku in SKUS), preset.name


@pytest.mark.parametrize(
    ("preset", "instance_type", "count", "fragment"),
    [
        ("falcon-7b", "Standard_NC12s_v3", 1, None),
        ("falcon-40b", "Standard_NC12s_v3", 1, "has a total of 32, but preset falcon-40b requires at least 90"),
        ("falcon-40b", "Standard_NC24s_v3", 2, "has 64 per node"),
        ("llama-2-7b", "Standard_NC6", 1, "provides 12 per GPU, but preset llama-2-7b requires at least 14 per GPU"),
        (
            "llama-2-13b-chat",
            "Standard_NC6s_v3",
            2,
            "provides 1 per node, but preset llama-2-13b-chat requires at least 2",
        ),
        ("llama-2-70b", "Standard_ND96asr_v4", 1, None),
        ("llama-2-70b", "Standard_NC24ads_A100_v4", 2, "has 80 per node"),
        # A fractional A10: one sixth of a 24 GiB card is 4 GiB, and no number of such nodes adds up
        # to one that holds falcon-7b's 15 GiB.
        ("falcon-7b", "Standard_NV6ads_A10_v5", 1, "has a total of 4, but preset falcon-7b requires at least 15"),
        ("falcon-7b", "Standard_NV6ads_A10_v5", 4, "has 4 per node, but preset falcon-7b needs 15 on each node"),
        ("falcon-7b", "Standard_NV36ads_A10_v5", 1, None),  # the whole 24 GiB card
        # 8-GPU ND sizes hold llama-2-70b (8 GPUs of at least 19 GiB, 152 GiB in all) on one node.
        ("llama-2-70b", "Standard_ND40rs_v2", 1, None),  # 8 × V100 32 GB
        ("llama-2-70b", "Standard_ND96isr_H100_v5", 1, None),  # 8 × H100 80 GB
        (
            "llama-2-70b",
            "Standard_NC96ads_A100_v4",
            2,
            "provides 4 per node, but preset llama-2-70b requires at least 8 per node",
        ),
    ],
)
def test_known_verdicts(preset: str, instance_type: str, count: int, fragment: str | None) -> None:
    messages = " | ".join(p.message for p in check_fit(get(preset), instance_type, count))
    if fragment is None:
        assert messages == ""
    else:
        assert fragment in messages


def test_unknown_n_and_d_sizes_skip_the_gpu_checks_and_others_are_unsupported() -> None:
    assert check_fit(get("llama-2-70b"), "Standard_NC999_future", 1) == []
    assert check_fit(get("llama-2-70b"), "Standard_D4s_v3", 1) == []
    [problem] = check_fit(get("falcon-7b"), "Standard_Bad", 1)
    assert problem.message.startswith("Unsupported instance type Standard_Bad. Supported SKUs: Standard_NC6, ")
    assert unsupported_instance_type("standard_nc12s_v3") is None, "SKU lookup ignores case"
