"""The preset catalogue and the `kaito presets` table."""

from __future__ import annotations

from kaito_operator.api.workspace import PRESET_NAMES
from kaito_operator.presets.catalog import PRESETS, WEIGHTS_PATH, get
from kaito_operator.presets.table import COLUMNS, render_catalogue

KAITO_V0_1 = (
    "falcon-7b", "falcon-7b-instruct", "falcon-40b", "falcon-40b-instruct", "llama-2-7b", "llama-2-7b-chat",
    "llama-2-13b", "llama-2-13b-chat", "llama-2-70b", "llama-2-70b-chat",
)  # fmt: skip


def test_the_catalogue_keeps_kaitos_ten_presets_and_adds_current_models() -> None:
    assert tuple(PRESETS) == PRESET_NAMES
    assert tuple(PRESETS)[:10] == KAITO_V0_1
    assert all(PRESETS[name].shape is None for name in KAITO_V0_1)
    for name in (
        "llama-3.1-8b-instruct", "llama-3.3-70b-instruct", "mistral-7b-instruct-v0.3", "phi-3.5-mini-instruct",
        "qwen2.5-7b-instruct", "qwen2.5-coder-7b-instruct",
    ):  # fmt: skip
        assert PRESETS[name].shape is not None and PRESETS[name].license, name
    assert get("FALCON-7B").name == "falcon-7b"


def test_meta_models_are_gated() -> None:
    # Meta's licence must be accepted on the Hub before download: users build those images.
    for name in ("llama-3.1-8b-instruct", "llama-3.2-3b-instruct", "llama-3.3-70b-instruct"):
        assert get(name).access == "private"
        assert get(name).license.startswith("llama3")
    assert get("qwen2.5-7b-instruct").license == "apache-2.0"
    assert get("phi-3.5-mini-instruct").license == "mit"


def test_every_preset_is_self_consistent() -> None:
    for preset in PRESETS.values():
        assert 0 < preset.max_input_tokens < preset.max_total_tokens, preset.name
        assert preset.disk_gib > preset.weights_gib, f"{preset.name}: the disk must hold the weights"
        assert preset.min_total_gpu_memory_gib >= preset.min_gpu_memory_per_gpu_gib * 1
        assert preset.startup_seconds >= 300
        assert preset.image("r.io/x/") == f"r.io/x/kaito-{preset.name}:{preset.image_tag}"
        if preset.access == "public" and preset.shape is None:
            assert preset.revision, f"{preset.name}: Kaito v0.1's public weights are pinned to a revision"
        assert preset.model_id.count("/") == 1
    assert get("falcon-7b").max_num_shard == 1, "71 attention heads cannot be split"
    assert WEIGHTS_PATH.startswith("/")


def test_falcon_40b_disk_has_a_unit() -> None:
    assert get("falcon-40b").disk_gib == 400  # Kaito v0.1 wrote "400": 400 bytes


def test_the_table_has_a_header_and_one_row_per_preset() -> None:
    lines = render_catalogue().splitlines()
    assert lines[0].split()[:2] == list(COLUMNS[:2])
    assert len(lines) == 1 + len(PRESETS)
    for line, preset in zip(lines[1:], PRESETS.values(), strict=True):
        assert line.startswith(preset.name + " ")
        assert preset.model_id in line
        assert f"{preset.disk_gib} GiB" in line
    assert "ghcr.io/kaito-py/kaito-falcon-7b:0.1.0" in lines[1]
    assert "private" in lines[10]  # llama-2-70b-chat: gated
