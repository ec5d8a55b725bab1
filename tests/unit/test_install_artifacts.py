"""What can be checked of the install artifacts without a Docker engine or a cluster: the operator
image's Dockerfile (stages, base pinned by digest, non-root user), the dependency set it installs
(the project without extras: no torch, no transformers), versions that must agree, the image
workflow (checks before it pushes, to where the chart and the docs point), and that the
provisioner's setup hint names things that exist."""

from __future__ import annotations

import importlib.metadata
import os
import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from gpu_provisioner.settings import IDENTITY_SETUP_HINT

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
CHART = REPO / "helm" / "kaito"
IMAGE_WORKFLOW = REPO / ".github" / "workflows" / "operator-image.yml"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_is_multi_stage_on_a_digest_pinned_base_and_runs_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    args = dict(value.split("=", 1) for op, value in instructions if op == "ARG" and "=" in value)
    stages = [value.split() for op, value in instructions if op == "FROM"]
    assert len(stages) >= 2, "a build stage and a slim final stage"
    for stage in stages:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], stage[0])
        assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", image), image
    final_index = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    users = [value for op, value in instructions[final_index:] if op == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root user (runAsNonRoot can check it)"
    installs = [value for op, value in instructions if op == "RUN" and "pip install" in value]
    assert installs and all("[" not in value for value in installs), "the project is installed without extras"
    entrypoint = next(value for op, value in instructions[final_index:] if op == "ENTRYPOINT")
    assert "kaito" in entrypoint


def _requirements_closure(name: str) -> set[str]:
    """Every distribution ``name`` pulls in without extras (markers evaluated for this platform)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = canonicalize_name(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = importlib.metadata.requires(current) or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its name is still in the set
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen


def test_the_image_dependency_set_has_no_torch_or_transformers() -> None:
    closure = _requirements_closure("kaito-py")
    assert "kubernetes-asyncio" in closure and "azure-mgmt-containerservice" in closure
    assert not closure & {"torch", "transformers", "tokenizers", "safetensors"}, closure


def test_chart_version_and_app_version_are_the_package_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == project["version"]
    assert chart["appVersion"] == project["version"]


def test_the_identity_hint_points_at_things_that_exist() -> None:
    script = REPO / "scripts" / "setup-identity.sh"
    assert "scripts/setup-identity.sh" in IDENTITY_SETUP_HINT and os.access(script, os.X_OK)
    assert "docs/install-aks.md" in IDENTITY_SETUP_HINT and (REPO / "docs" / "install-aks.md").is_file()
    assert "helm/kaito" in IDENTITY_SETUP_HINT and (CHART / "Chart.yaml").is_file()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for dotted in re.findall(r"\b(workloadIdentity\.\w+|provisioner\.azure\.\w+)", IDENTITY_SETUP_HINT):
        node = values
        for part in dotted.split("."):
            assert part in node, f"{dotted} named by the hint is not a chart value"
            node = node[part]
    named = set(re.findall(r"\.(resourceGroup|clusterName|location)\b", IDENTITY_SETUP_HINT))
    assert named <= set(values["provisioner"]["azure"]), named


def test_the_image_workflow_pushes_where_the_chart_and_the_docs_point() -> None:
    workflow = yaml.safe_load(IMAGE_WORKFLOW.read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert workflow["env"]["IMAGE"] == values["operator"]["image"]["repository"]
    chart_reference = (
        f"{workflow['env']['CHART_REPOSITORY']}/{yaml.safe_load((CHART / 'Chart.yaml').read_text())['name']}"
    )
    for doc in ("README.md", "docs/install-aks.md"):
        assert f"helm install kaito {chart_reference}" in (REPO / doc).read_text(), doc


def test_the_image_workflow_checks_the_image_before_it_pushes_and_labels_its_source() -> None:
    steps = yaml.safe_load(IMAGE_WORKFLOW.read_text())["jobs"]["image"]["steps"]
    (check,) = [i for i, step in enumerate(steps) if "65532:65532" in step.get("run", "")]
    (push,) = [i for i, step in enumerate(steps) if "push" in step.get("with", {})]
    assert check < push, "the image is checked before the step that pushes it"
    (checked_build,) = [i for i, step in enumerate(steps) if step.get("with", {}).get("load")]
    assert checked_build < check
    assert all("if" not in steps[i] for i in (checked_build, check)), "tag builds are checked too"
    assert "torch" in steps[check]["run"] and "--help" in steps[check]["run"]
    label = yaml.safe_load(IMAGE_WORKFLOW.read_text())["env"]["SOURCE_LABEL"]
    assert label.startswith("org.opencontainers.image.source=")
    for i in (checked_build, push):
        assert steps[i]["with"]["labels"] == "${{ env.SOURCE_LABEL }}"
