"""Every current-model preset has an example manifest that parses, names it, and fits its VM size."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kaito_operator.api.workspace import Workspace
from kaito_operator.presets.catalog import PRESETS
from kaito_operator.presets.fit import check_fit

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CURRENT = [preset for preset in PRESETS.values() if preset.shape is not None]


@pytest.mark.parametrize("preset", CURRENT, ids=lambda preset: preset.name)
def test_example_manifest_fits(preset: object) -> None:
    from kaito_operator.presets.catalog import Preset

    assert isinstance(preset, Preset)
    path = EXAMPLES / f"kaito_workspace_{preset.name}.yaml"
    workspace = Workspace.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    spec = workspace.inference.preset
    assert spec is not None and spec.name == preset.name
    assert check_fit(preset, workspace.resource.instance_type, workspace.resource.count) == []
    if preset.access == "private":
        # Gated weights: the user's own image.
        assert spec.access_mode == "private" and spec.preset_options and spec.preset_options.image
