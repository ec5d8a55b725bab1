"""The node shape (vCPUs, memory, GPUs) behind each VM size the simulator offers.

This is the simulator's own description of Azure, written from Azure's published size tables
(vCPUs, memory in GiB, and the number of GPUs the VM exposes), not taken from the operator's SKU
table: a test that a simulated node reports two GPUs then checks two independent sources against
each other. Fractional A10 sizes expose one (partial) GPU device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from sandbox.aks_simulator.config import DEFAULT_CPU_SIZES


@dataclass(frozen=True)
class NodeShape:
    vcpus: int
    memory_gib: int
    gpus: int


GPU_SIZES: Final[dict[str, NodeShape]] = {
    name: NodeShape(vcpus, memory, gpus)
    for name, (vcpus, memory, gpus) in {
        # NC (K80), NV (M60), NV v3 (M60)
        "Standard_NC6": (6, 56, 1),
        "Standard_NC12": (12, 112, 2),
        "Standard_NC24": (24, 224, 4),
        "Standard_NC24r": (24, 224, 4),
        "Standard_NV6": (6, 56, 1),
        "Standard_NV12": (12, 112, 2),
        "Standard_NV24": (24, 224, 4),
        "Standard_NV12s_v3": (12, 112, 1),
        "Standard_NV24s_v3": (24, 224, 2),
        "Standard_NV48s_v3": (48, 448, 4),
        # ND (P40), NC v2 (P100), NC v3 and ND v2 (V100)
        "Standard_ND6s": (6, 112, 1),
        "Standard_ND12s": (12, 224, 2),
        "Standard_ND24s": (24, 448, 4),
        "Standard_ND24rs": (24, 448, 4),
        "Standard_NC6s_v2": (6, 112, 1),
        "Standard_NC12s_v2": (12, 224, 2),
        "Standard_NC24s_v2": (24, 448, 4),
        "Standard_NC24rs_v2": (24, 448, 4),
        "Standard_NC6s_v3": (6, 112, 1),
        "Standard_NC12s_v3": (12, 224, 2),
        "Standard_NC24s_v3": (24, 448, 4),
        "Standard_NC24rs_v3": (24, 448, 4),
        "Standard_ND40rs_v2": (40, 672, 8),
        # NCasT4_v3 (T4)
        "Standard_NC4as_T4_v3": (4, 28, 1),
        "Standard_NC8as_T4_v3": (8, 56, 1),
        "Standard_NC16as_T4_v3": (16, 110, 1),
        "Standard_NC64as_T4_v3": (64, 440, 4),
        # A100 v4
        "Standard_ND96asr_v4": (96, 900, 8),
        "Standard_ND96amsr_A100_v4": (96, 1900, 8),
        "Standard_NC24ads_A100_v4": (24, 220, 1),
        "Standard_NC48ads_A100_v4": (48, 440, 2),
        "Standard_NC96ads_A100_v4": (96, 880, 4),
        # NVadsA10 v5 (A10, fractional below NV36)
        "Standard_NV6ads_A10_v5": (6, 55, 1),
        "Standard_NV12ads_A10_v5": (12, 110, 1),
        "Standard_NV18ads_A10_v5": (18, 220, 1),
        "Standard_NV36ads_A10_v5": (36, 440, 1),
        "Standard_NV36adms_A10_v5": (36, 880, 1),
        "Standard_NV72ads_A10_v5": (72, 880, 2),
        # H100 v5
        "Standard_ND96isr_H100_v5": (96, 1900, 8),
        "Standard_NC40ads_H100_v5": (40, 320, 1),
        "Standard_NC80adis_H100_v5": (80, 640, 2),
    }.items()
}


def _all_sizes() -> dict[str, NodeShape]:
    cpu = {name: NodeShape(vcpus, memory, 0) for name, (vcpus, memory) in DEFAULT_CPU_SIZES.items()}
    return {**cpu, **GPU_SIZES}


def known_sizes() -> set[str]:
    return set(_all_sizes())


def canonical_size(vm_size: str, allowed: list[str] | None) -> str | None:
    """The allowed spelling of ``vm_size`` (Azure matches sizes case-insensitively), or None."""
    candidates = allowed if allowed is not None else known_sizes()
    lowered = vm_size.lower()
    return next((size for size in candidates if size.lower() == lowered), None)


def shape(vm_size: str) -> NodeShape:
    """The shape of a known size; an allowed size the table lacks gets a small CPU node's shape."""
    lowered = vm_size.lower()
    found = next((node for name, node in _all_sizes().items() if name.lower() == lowered), None)
    return found if found is not None else NodeShape(vcpus=4, memory_gib=16, gpus=0)
