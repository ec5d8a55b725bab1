"""``kaito presets``: the preset catalogue as a plain-text table, one line per preset."""

from __future__ import annotations

from collections.abc import Sequence

from kaito_operator.presets.catalog import DEFAULT_REGISTRY, PRESETS, Preset

COLUMNS = ("NAME", "MODEL", "PARAMS", "GPUS", "GPU MEM/GPU", "GPU MEM TOTAL", "DISK", "ACCESS", "IMAGE")


def _row(preset: Preset, registry: str) -> tuple[str, ...]:
    return (
        preset.name,
        preset.model_id,
        f"{preset.params_billion:g}B",
        str(preset.min_gpu_count),
        f"{preset.min_gpu_memory_per_gpu_gib} GiB",
        f"{preset.min_total_gpu_memory_gib} GiB",
        f"{preset.disk_gib} GiB",
        preset.access,
        preset.image(registry) if preset.access == "public" else "(build your own; presetOptions.image)",
    )


def _format(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def render_catalogue(registry: str = DEFAULT_REGISTRY) -> str:
    """Name, model, parameters, minimum GPUs, per-GPU and total GPU memory, disk, access and image."""
    rows = [COLUMNS, *(_row(preset, registry) for preset in PRESETS.values())]
    return _format(rows)
