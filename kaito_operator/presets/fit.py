"""Does a preset fit on ``count`` nodes of an instance type? A pure function, with Kaito's messages.

The numbers are computed from per-GPU memory. Every TGI replica runs on a single node (TGI shards
across the GPUs of one machine, never across machines), so the GPU count is checked **per node**
(Kaito v0.1 summed GPUs over all nodes, letting a 2-GPU preset pass on two 1-GPU nodes, and its
message gains "per node"), and one node's GPU memory must hold the model on its own. The total
over all nodes (count × GPUs per VM × memory per GPU) keeps Kaito's message.
"""

from __future__ import annotations

from dataclasses import dataclass

from kaito_operator.presets.catalog import Preset
from kaito_operator.vm_sizes import SKUS, GpuSku, lookup


@dataclass(frozen=True)
class FitProblem:
    field: str
    message: str


def unsupported_instance_type(instance_type: str) -> FitProblem | None:
    """Unknown SKUs are allowed only in the N (GPU) and D (CPU) families, as in Kaito v0.1."""
    if lookup(instance_type) is not None or instance_type.startswith(("Standard_N", "Standard_D")):
        return None
    return FitProblem(
        "resource.instanceType",
        f"Unsupported instance type {instance_type}. Supported SKUs: {', '.join(SKUS)}",
    )


def check_fit(preset: Preset, instance_type: str, count: int) -> list[FitProblem]:
    """Every reason the preset cannot run on ``count`` × ``instance_type``; empty when it fits.

    Unknown N/D SKUs skip the GPU checks (nothing is known about them), as Kaito v0.1 did.
    """
    unsupported = unsupported_instance_type(instance_type)
    if unsupported is not None:
        return [unsupported]
    sku = lookup(instance_type)
    if sku is None:
        return []
    return check_sku_fit(preset, sku, count, instance_type)


def check_sku_fit(preset: Preset, sku: GpuSku, count: int, instance_type: str | None = None) -> list[FitProblem]:
    """The GPU checks of :func:`check_fit` on a known SKU record; messages name ``instance_type`` as
    the user spelled it (default: the record's name)."""
    instance_type = instance_type or sku.name
    field = "resource.instanceType"
    problems = []
    if sku.gpu_count < preset.min_gpu_count:
        problems.append(
            FitProblem(
                field,
                f"Insufficient number of GPUs: Instance type {instance_type} provides {sku.gpu_count} per node, "
                f"but preset {preset.name} requires at least {preset.min_gpu_count} per node",
            )
        )
    if sku.gpu_memory_gib < preset.min_gpu_memory_per_gpu_gib:
        problems.append(
            FitProblem(
                field,
                f"Insufficient GPU memory: Instance type {instance_type} provides {sku.gpu_memory_gib} per GPU, "
                f"but preset {preset.name} requires at least {preset.min_gpu_memory_per_gpu_gib} per GPU",
            )
        )
    total_memory = count * sku.total_gpu_memory_gib
    if total_memory < preset.min_total_gpu_memory_gib:
        problems.append(
            FitProblem(
                field,
                f"Insufficient total GPU memory: Instance type {instance_type} has a total of {total_memory}, "
                f"but preset {preset.name} requires at least {preset.min_total_gpu_memory_gib}",
            )
        )
    elif sku.total_gpu_memory_gib < preset.min_total_gpu_memory_gib:
        problems.append(
            FitProblem(
                field,
                f"Insufficient GPU memory per node: Instance type {instance_type} has {sku.total_gpu_memory_gib} "
                f"per node, but preset {preset.name} needs {preset.min_total_gpu_memory_gib} on each node "
                "(every replica is served by one node)",
            )
        )
    return problems
