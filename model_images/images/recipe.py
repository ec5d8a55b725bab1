"""Renders a preset's Dockerfile from the template: the pinned TGI image plus the weights at
``catalog.WEIGHTS_PATH``. Pure; the catalogue is the only input besides the revision."""

from __future__ import annotations

import shlex
from importlib import metadata, resources
from string import Template

from kaito_operator.presets.catalog import TGI_IMAGE, WEIGHTS_PATH, Preset
from model_images.runtime.command import RUNTIME_DIR

RUNTIME_LIBRARIES = ("aiohttp", "prometheus-client", "pydantic")
"""What the runtime imports beyond the ``runtime`` extra (torch, transformers, ...)."""

TEMPLATE_NAME = "Dockerfile.template"


def _template() -> Template:
    return Template(resources.files("model_images.images").joinpath(TEMPLATE_NAME).read_text(encoding="utf-8"))


def runtime_requirements() -> list[str]:
    """The runtime's requirements, as this installation of kaito-py declares them (one source of truth:
    pyproject.toml): the ``runtime`` extra plus the few core libraries the runtime imports."""
    chosen = []
    for requirement in metadata.requires("kaito-py") or []:
        spec, _, marker = requirement.partition(";")
        name = spec.split("[")[0].split("<")[0].split(">")[0].split("=")[0].split("~")[0].strip()
        if ('extra == "runtime"' in marker) or (not marker.strip() and name.lower() in RUNTIME_LIBRARIES):
            chosen.append(spec.strip())
    return chosen


def render_dockerfile(preset: Preset, revision: str | None) -> str:
    """The Dockerfile for ``preset``. ``revision`` is recorded in a label (``unknown`` when the
    weights came from a local directory of unknown origin)."""
    if ":" not in TGI_IMAGE.rsplit("/", 1)[-1] or TGI_IMAGE.endswith(":latest"):
        raise ValueError(f"catalog.TGI_IMAGE must be pinned to a release tag, got {TGI_IMAGE}")
    return _template().substitute(
        preset=preset.name,
        model_id=preset.model_id,
        revision=revision or "unknown",
        image_tag=preset.image_tag,
        tgi_image=TGI_IMAGE,
        tgi_tag=TGI_IMAGE.rsplit(":", 1)[1],
        weights_path=WEIGHTS_PATH,
        runtime_dir=RUNTIME_DIR,
        runtime_requirements=" ".join(shlex.quote(r) for r in runtime_requirements()),
    )
