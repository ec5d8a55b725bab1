"""``kaito images build PRESET``: weights → checks → build context → ``docker buildx build``.

The build context is a directory with the rendered Dockerfile, the weights under ``weights/``
(hard-linked from the download or ``--weights-dir`` when possible, so nothing is copied twice)
and ``build.json`` describing what went in. Docker runs only when an engine answers
``docker info``; otherwise the exact command is printed, so the context can be built elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from kaito_operator.presets.catalog import DEFAULT_REGISTRY, TGI_IMAGE, WEIGHTS_PATH, Preset, get
from model_images.images.recipe import render_dockerfile
from model_images.images.weights import (
    WEIGHT_PATTERNS,
    DownloadError,
    WeightsError,
    WeightsReport,
    check_weights,
    download_weights,
    resolve_main_commit,
)

DOCKER_INFO_TIMEOUT_SECONDS: Final = 20
DOWNLOAD_DIR: Final = ".download"
_DOCKERIGNORE: Final = f"{DOWNLOAD_DIR}\nbuild.json\n"


class BuildError(Exception):
    """The build cannot go ahead; the message says what to change."""


@dataclass(frozen=True)
class BuildPlan:
    preset: Preset
    image: str
    revision: str | None
    """The Hub commit to download, or None when ``weights_dir`` is given and its origin unknown."""
    weights_dir: Path | None
    context: Path
    check_size: bool = True


def plan_build(
    preset_name: str,
    *,
    registry: str | None = None,
    revision: str | None = None,
    weights_dir: Path | None = None,
    output: Path | None = None,
    check_size: bool = True,
) -> BuildPlan:
    """Resolve what to build. A gated preset (no pinned revision in the catalogue) needs
    ``revision`` unless the weights are already on disk. A public preset the catalogue does not
    pin is pinned at download time to the commit its ``main`` branch points to (recorded in the
    image label and build.json)."""
    try:
        preset = get(preset_name)
    except KeyError as exc:
        raise BuildError(str(exc.args[0])) from None
    chosen_revision = revision or preset.revision
    if chosen_revision is None and weights_dir is None and preset.access == "private":
        raise BuildError(
            f"{preset.name} comes from the gated repository {preset.model_id}, and the catalogue pins no "
            "revision for it: pass --revision COMMIT (the commit you accepted the licence for; see "
            f"https://huggingface.co/{preset.model_id}/commits/main) and set HF_TOKEN to a token with access, "
            "or pass --weights-dir with weights you already have"
        )
    return BuildPlan(
        preset=preset,
        image=preset.image(registry or DEFAULT_REGISTRY),
        revision=chosen_revision,
        weights_dir=weights_dir,
        context=output or Path("build") / "images" / preset.name,
        check_size=check_size,
    )


def obtain_weights(plan: BuildPlan) -> Path:
    """The directory to take the weights from: ``--weights-dir`` or a fresh download."""
    if plan.weights_dir is not None:
        return plan.weights_dir
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if plan.preset.access == "private" and not token:
        raise BuildError(f"{plan.preset.model_id} is gated: set HF_TOKEN to a Hugging Face token with access")
    revision = plan.revision or resolve_main_commit(plan.preset, token)
    destination = plan.context / DOWNLOAD_DIR
    print(f"downloading {plan.preset.model_id}@{revision} to {destination}", flush=True)
    return download_weights(plan.preset, revision, destination, token)


def write_build_context(plan: BuildPlan, source: Path) -> WeightsReport:
    """Check the weights in ``source`` and write the build context at ``plan.context``."""
    report = check_weights(
        source,
        expected_gib=plan.preset.weights_gib if plan.check_size else None,
        label=f"{plan.preset.name} ({plan.preset.params_billion}B parameters)",
    )
    context = plan.context
    context.mkdir(parents=True, exist_ok=True)
    weights = context / "weights"
    if weights.exists():
        shutil.rmtree(weights)
    staged = _stage_weights(source, weights)
    _stage_runtime(context / "runtime")
    (context / "Dockerfile").write_text(render_dockerfile(plan.preset, plan.revision), encoding="utf-8")
    (context / ".dockerignore").write_text(_DOCKERIGNORE, encoding="utf-8")
    manifest = {
        "preset": plan.preset.name,
        "image": plan.image,
        "base_image": TGI_IMAGE,
        "model_id": plan.preset.model_id,
        "revision": plan.revision,
        "weights_path": WEIGHTS_PATH,
        "safetensors_gib": round(report.total_gib, 3),
        "files": {name: (weights / name).stat().st_size for name in staged},
    }
    (context / "build.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return report


def _stage_runtime(target: Path) -> None:
    """The runtime's sources (``model_images/runtime``), which the image installs beside TGI, and
    ``model_images/cli.py``, which ``python -m model_images.runtime`` (the container command) imports."""
    package = Path(__file__).resolve().parents[1]
    if target.exists():
        shutil.rmtree(target)
    (target / "model_images").mkdir(parents=True)
    for module in ("__init__.py", "cli.py"):
        shutil.copy2(package / module, target / "model_images" / module)
    shutil.copytree(
        package / "runtime", target / "model_images" / "runtime", ignore=shutil.ignore_patterns("__pycache__")
    )


def _stage_weights(source: Path, target: Path) -> list[str]:
    """Put the files an image needs from ``source`` into ``target``, world-readable (TGI may run
    as any user). Hard links when the source file is already readable, copies otherwise, so the
    source's permissions are never changed."""
    target.mkdir(parents=True)
    staged = []
    for path in sorted(source.iterdir()):
        if not path.is_file() or not any(fnmatch.fnmatch(path.name, pattern) for pattern in WEIGHT_PATTERNS):
            continue
        destination = target / path.name
        readable = path.stat().st_mode & stat.S_IROTH
        try:
            if not readable:
                raise OSError("not world-readable")
            os.link(path, destination)
        except OSError:
            shutil.copyfile(path, destination)
            destination.chmod(0o644)
        staged.append(path.name)
    return staged


def buildx_command(plan: BuildPlan, *, push: bool, platform: str) -> list[str]:
    return [
        "docker",
        "buildx",
        "build",
        "--platform",
        platform,
        "--tag",
        plan.image,
        "--push" if push else "--load",
        str(plan.context),
    ]


def docker_engine_available() -> bool:
    """Whether a Docker engine answers ``docker info`` (not just whether the CLI is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=DOCKER_INFO_TIMEOUT_SECONDS, check=False
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0


def main(args: argparse.Namespace) -> int:
    try:
        plan = plan_build(
            args.preset,
            registry=args.registry,
            revision=args.revision,
            weights_dir=args.weights_dir,
            output=args.output,
            check_size=not args.skip_size_check,
        )
        if plan.revision is None and plan.weights_dir is None:
            token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
            plan = dataclasses.replace(plan, revision=resolve_main_commit(plan.preset, token))
        report = write_build_context(plan, obtain_weights(plan))
    except (BuildError, DownloadError, WeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"build context for {plan.image} written to {plan.context} "
        f"({len(report.safetensors)} safetensors files, {report.total_gib:.2f} GiB)"
    )
    command = buildx_command(plan, push=args.push, platform=args.platform)
    if not docker_engine_available():
        print("no Docker engine answered `docker info`; build the image with:")
        print(f"  {shlex.join(command)}")
        return 0
    print(f"running: {shlex.join(command)}", flush=True)
    try:
        return subprocess.run(command, timeout=args.build_timeout, check=False).returncode
    except subprocess.TimeoutExpired:
        print(f"error: docker buildx did not finish within {args.build_timeout} s", file=sys.stderr)
        return 1
