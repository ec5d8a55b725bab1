"""Azure GPU VM sizes: GPU count, memory of **one** GPU, GPU model, and whether it computes bfloat16.

Kaito v0.1's table stored the whole VM's GPU memory in a field its checks treated as per-GPU; this
table stores per-GPU memory (GiB, as the vendors quote it) and derives totals. It holds every SKU
Kaito v0.1 supported plus current generations (NC A100 v4, ND H100 v5, NC H100 v5, NV A10 v5,
NC T4 v3). Fractional A10 sizes (NVxxads_A10_v5) expose one partial GPU.

bfloat16 needs compute capability 8.0 (Ampere) or newer (NVIDIA's CUDA programming guide; PyTorch's
``torch.cuda.is_bf16_supported``): A100 (8.0), A10 (8.6), H100 (9.0) have it; K80 (3.7), M60
(5.2), P100 (6.0), P40 (6.1), V100 (7.0) and T4 (7.5) do not, so models run there in float16.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class GpuSku:
    name: str
    gpu_count: int
    gpu_memory_gib: int
    """Memory of one GPU (for fractional SKUs, the slice the VM gets)."""
    gpu_model: str
    os_skus: tuple[str, ...] = ("Ubuntu",)

    @property
    def supports_bf16(self) -> bool:
        return self.gpu_model.startswith(_BF16_GPU_PREFIXES)

    @property
    def total_gpu_memory_gib(self) -> int:
        return self.gpu_count * self.gpu_memory_gib


def _family(model: str, memory: int, sizes: dict[str, int], os_skus: tuple[str, ...] = ("Ubuntu",)) -> list[GpuSku]:
    return [GpuSku(name, count, memory, model, os_skus) for name, count in sizes.items()]


_MARINER = ("AzureLinux", "Ubuntu")
_BF16_GPU_PREFIXES: Final = ("A100", "A10", "H100")
"""GPU models of compute capability 8.0 or newer in this table (see the module docstring)."""

_ALL: Final[list[GpuSku]] = [
    *_family("Tesla K80", 12, {"Standard_NC6": 1, "Standard_NC12": 2, "Standard_NC24": 4, "Standard_NC24r": 4}),
    *_family("Tesla M60", 8, {"Standard_NV6": 1, "Standard_NV12": 2, "Standard_NV24": 4}),
    *_family("Tesla M60", 8, {"Standard_NV12s_v3": 1, "Standard_NV24s_v3": 2, "Standard_NV48s_v3": 4}),
    *_family("Tesla P40", 24, {"Standard_ND6s": 1, "Standard_ND12s": 2, "Standard_ND24s": 4, "Standard_ND24rs": 4}),
    *_family(
        "Tesla P100",
        16,
        {"Standard_NC6s_v2": 1, "Standard_NC12s_v2": 2, "Standard_NC24s_v2": 4, "Standard_NC24rs_v2": 4},
    ),
    *_family(
        "Tesla V100",
        16,
        {"Standard_NC6s_v3": 1, "Standard_NC12s_v3": 2, "Standard_NC24s_v3": 4, "Standard_NC24rs_v3": 4},
        _MARINER,
    ),
    *_family("Tesla V100", 32, {"Standard_ND40rs_v2": 8}, _MARINER),
    *_family(
        "Tesla T4",
        16,
        {
            "Standard_NC4as_T4_v3": 1,
            "Standard_NC8as_T4_v3": 1,
            "Standard_NC16as_T4_v3": 1,
            "Standard_NC64as_T4_v3": 4,
        },
        _MARINER,
    ),
    *_family("A100 40GB", 40, {"Standard_ND96asr_v4": 8}),
    *_family("A100 80GB", 80, {"Standard_ND96amsr_A100_v4": 8}),
    *_family(
        "A100 80GB PCIe",
        80,
        {"Standard_NC24ads_A100_v4": 1, "Standard_NC48ads_A100_v4": 2, "Standard_NC96ads_A100_v4": 4},
    ),
    GpuSku("Standard_NV6ads_A10_v5", 1, 4, "A10 (1/6)"),
    GpuSku("Standard_NV12ads_A10_v5", 1, 8, "A10 (1/3)"),
    GpuSku("Standard_NV18ads_A10_v5", 1, 12, "A10 (1/2)"),
    GpuSku("Standard_NV36ads_A10_v5", 1, 24, "A10"),
    GpuSku("Standard_NV36adms_A10_v5", 1, 24, "A10"),
    GpuSku("Standard_NV72ads_A10_v5", 2, 24, "A10"),
    *_family("H100 80GB", 80, {"Standard_ND96isr_H100_v5": 8}),
    *_family("H100 NVL 94GB", 94, {"Standard_NC40ads_H100_v5": 1, "Standard_NC80adis_H100_v5": 2}),
]

SKUS: Final[dict[str, GpuSku]] = {sku.name: sku for sku in _ALL}


def lookup(instance_type: str) -> GpuSku | None:
    """The SKU record, matched case-insensitively (Azure treats VM sizes that way)."""
    sku = SKUS.get(instance_type)
    if sku is not None:
        return sku
    lowered = instance_type.lower()
    return next((s for s in _ALL if s.name.lower() == lowered), None)


def is_gpu_size(instance_type: str) -> bool:
    """gpu-provisioner's rule for the kaito.sh/machine-type label: N-series sizes are GPU machines."""
    return "Standard_N" in instance_type or lookup(instance_type) is not None
