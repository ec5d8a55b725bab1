"""The node shape (vCPUs, memory, GPUs) behind a VM size, for the capacity a simulated node reports.

GPU counts come from the project's SKU table; vCPUs are read from the size name (the number after
the family letters, as Azure names sizes) and memory is approximated from them, which is close
enough for scheduling in a sandbox.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kaito_operator.presets import skus
from sandbox.aks_simulator.config import DEFAULT_CPU_SIZES

_VCPUS = re.compile(r"^Standard_[A-Za-z]+?(\d+)", re.IGNORECASE)
_GIB_PER_VCPU_GPU_SIZES = 9


@dataclass(frozen=True)
class NodeShape:
    vcpus: int
    memory_gib: int
    gpus: int


def known_sizes() -> set[str]:
    return set(skus.SKUS) | set(DEFAULT_CPU_SIZES)


def canonical_size(vm_size: str, allowed: list[str] | None) -> str | None:
    """The allowed spelling of ``vm_size`` (Azure matches sizes case-insensitively), or None."""
    candidates = allowed if allowed is not None else known_sizes()
    lowered = vm_size.lower()
    return next((size for size in candidates if size.lower() == lowered), None)


def shape(vm_size: str) -> NodeShape:
    cpu = next((v for k, v in DEFAULT_CPU_SIZES.items() if k.lower() == vm_size.lower()), None)
    if cpu is not None:
        return NodeShape(vcpus=cpu[0], memory_gib=cpu[1], gpus=0)
    match = _VCPUS.match(vm_size)
    vcpus = int(match.group(1)) if match else 4
    sku = skus.lookup(vm_size)
    gpus = sku.gpu_count if sku is not None else 0
    return NodeShape(vcpus=vcpus, memory_gib=vcpus * _GIB_PER_VCPU_GPU_SIZES, gpus=gpus)
