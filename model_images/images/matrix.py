"""The image build matrix, straight from the preset catalogue: one entry per public preset.

``kaito images matrix`` prints it as one line of JSON in GitHub Actions' ``{"include": [...]}``
form, which .github/workflows/images.yml feeds to ``strategy.matrix``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from kaito_operator.presets.catalog import DEFAULT_REGISTRY, PRESETS


def build_matrix(*, include_private: bool = False, registry: str = DEFAULT_REGISTRY) -> dict[str, list[dict[str, Any]]]:
    return {
        "include": [
            {
                "preset": preset.name,
                "model_id": preset.model_id,
                "revision": preset.revision,
                "access": preset.access,
                "image": preset.image(registry),
                "weights_gib": preset.weights_gib,
                "disk_gib": preset.disk_gib,
            }
            for preset in PRESETS.values()
            if include_private or preset.access == "public"
        ]
    }


def main(args: argparse.Namespace) -> int:
    matrix = build_matrix(include_private=args.all, registry=args.registry or DEFAULT_REGISTRY)
    print(json.dumps(matrix, separators=(",", ":")))
    return 0
