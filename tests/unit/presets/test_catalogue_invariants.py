"""The preset catalogue and the `kaito presets` table."""

from __future__ import annotations

from kaito_operator.api.workspace import PRESET_NAMES
from kaito_operator.presets.catalog import PRESETS, WEIGHTS_PATH, get
from kaito_operator.presets.table import COLUMNS, render_catalogue


def test_the_catalogue_lists_exactly_kaitos_ten_presets() -> None:
    assert tuple(PRESETS) == PRESET_NAMES
    assert len(PRESETS) == 10
    assert get("FALCON-7B").name == "falcon-7b"


def test_every_preset_is_self_consistent() -> None:
    for preset in PRESETS.values():
        assert 0 < preset.max_input_tokens < preset.max_total_tokens, preset.name
        assert preset.disk_gib > preset.weights_gib, f"{preset.name}: the disk must hold the weights"
        assert preset.min_total_gpu_memory_gib >= preset.min_gpu_memory_per_gpu_gib * 1
        assert preset.startup_seconds >= 300
        assert preset.image("r.io/x/") == f"r.io/x/kaito-{preset.name}:{preset.image_tag}"
        if preset.access == "public":
            assert preset.revision, f"{preset.name}: public weights are pinned to a revision"
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
    assert "private" in lines[-1]
