"""The TGI image tooling without Docker: the pinned recipe, the build matrix from the catalogue,
build contexts made from local weights (the tiny model), and weights that must be refused."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kaito_operator.presets.catalog import PRESETS, TGI_IMAGE, WEIGHTS_PATH, get
from model_images.cli import register
from model_images.images.build import BuildError, obtain_weights, plan_build, write_build_context
from model_images.images.matrix import build_matrix
from model_images.images.recipe import render_dockerfile
from model_images.images.weights import WeightsError, check_weights
from model_images.runtime.command import RUNTIME_DIR, runtime_container_command


def lazy(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module(module), function)(args)
        return result

    return call


def kaito(*argv: str) -> int:
    """Run one of this package's ``kaito`` sub-commands in-process."""
    parser = argparse.ArgumentParser(prog="kaito")
    register(parser.add_subparsers(dest="command", required=True), lazy)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    joined = dockerfile.replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in joined.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


# --- the recipe -----------------------------------------------------------------------------------
@pytest.mark.parametrize("preset_name", list(PRESETS))
def test_recipe_is_pinned_and_puts_the_weights_where_the_operator_looks(preset_name: str) -> None:
    preset = get(preset_name)
    dockerfile = render_dockerfile(preset, preset.revision)
    steps = instructions(dockerfile)

    assert steps[0] == ("FROM", TGI_IMAGE)
    assert [step for step in steps if step[0] == "FROM"] == [("FROM", TGI_IMAGE)]
    assert "latest" not in dockerfile
    assert ("COPY", f"weights/ {WEIGHTS_PATH}/") in steps
    assert f'sh.kaito.model-revision="{preset.revision or "unknown"}"' in dockerfile
    assert "HF_HUB_OFFLINE=1" in dockerfile
    assert "$" not in dockerfile.replace("${", "").replace("$(", "")  # every placeholder was filled
    # The transformers runtime the operator runs for `kaito.sh/runtime: transformers` is in the image.
    command = runtime_container_command(WEIGHTS_PATH, 5000, 1024, 2048)
    assert ("RUN", f'{command[0]} -c "import model_images.runtime.serve"') in steps
    assert ("COPY", f"runtime/ {RUNTIME_DIR}/src/") in steps
    assert ("RUN", f"{command[0]} {' '.join(command[1:4])} --help > /dev/null") in steps
    assert "'transformers<5,>=4.57'" in dockerfile


# --- the matrix -----------------------------------------------------------------------------------
def test_matrix_is_every_public_preset_with_its_pinned_revision() -> None:
    matrix = build_matrix()
    public = [p for p in PRESETS.values() if p.access == "public"]

    assert [entry["preset"] for entry in matrix["include"]] == [p.name for p in public]
    for entry, preset in zip(matrix["include"], public, strict=True):
        assert entry["image"] == preset.image()
        # Unpinned public presets are pinned at build time to main's current commit.
        assert entry["revision"] == preset.revision and (entry["revision"] is None or len(entry["revision"]) == 40)
        assert entry["model_id"] == preset.model_id
    names = {entry["preset"] for entry in matrix["include"]}
    # The current open models the issue names, where their licence lets us publish the image.
    assert {"mistral-7b-instruct-v0.3", "phi-3.5-mini-instruct", "qwen2.5-7b-instruct"} <= names
    assert "qwen2.5-coder-7b-instruct" in names and "llama-3.1-8b-instruct" not in names  # Meta's are gated
    everything = {entry["preset"] for entry in build_matrix(include_private=True)["include"]}
    assert {"llama-3.1-8b-instruct", "llama-3.3-70b-instruct"} <= everything


def test_an_unpinned_public_preset_plans_without_a_revision(tmp_path: Path) -> None:
    plan = plan_build("qwen2.5-7b-instruct", output=tmp_path)
    assert plan.revision is None  # resolved to main's commit when the weights are downloaded


def test_matrix_command_prints_one_line_of_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert kaito("images", "matrix", "--registry", "myregistry.azurecr.io") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    printed = json.loads(out)
    assert printed == build_matrix(registry="myregistry.azurecr.io")
    assert printed["include"][0]["image"] == "myregistry.azurecr.io/kaito-falcon-7b:0.1.0"

    assert kaito("images", "matrix", "--all") == 0
    assert len(json.loads(capsys.readouterr().out)["include"]) == len(PRESETS)


def test_the_operator_cli_registers_the_commands() -> None:
    from kaito.cli import build_parser

    args = build_parser().parse_args(["images", "build", "falcon-7b", "--push", "--registry", "r.io"])
    assert (args.preset, args.push, args.registry) == ("falcon-7b", True, "r.io")
    assert build_parser().parse_args(["runtime", "serve", "--model", "/m", "--port", "8080"]).port == 8080
    assert build_parser().parse_args(["generate", "ws", "hi", "--stream"]).workspace == "ws"


# --- gated presets --------------------------------------------------------------------------------
def test_gated_preset_needs_a_revision(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BuildError, match=r"pass --revision COMMIT .* set HF_TOKEN"):
        plan_build("llama-2-7b-chat")
    assert kaito("images", "build", "llama-2-7b-chat") == 2
    assert "meta-llama/Llama-2-7b-chat-hf" in capsys.readouterr().err


def test_gated_preset_needs_a_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    plan = plan_build("llama-2-13b", revision="a" * 40, output=tmp_path)
    assert plan.image == "ghcr.io/kaito-py/kaito-llama-2-13b:0.1.0"
    with pytest.raises(BuildError, match="is gated: set HF_TOKEN"):
        obtain_weights(plan)


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(BuildError, match="Unsupported preset name falcon-9b; supported: falcon-7b"):
        plan_build("falcon-9b")


# --- build contexts from local weights (the tiny model stands in for real weights) ---------------
@pytest.mark.runtime
def test_build_context_from_a_local_weights_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    plan = plan_build("falcon-7b", weights_dir=tiny_model_dir, output=tmp_path / "context", check_size=False)
    report = write_build_context(plan, tiny_model_dir)

    context = tmp_path / "context"
    assert report.safetensors == [tiny_model_dir / "model.safetensors"]
    assert instructions((context / "Dockerfile").read_text())[0] == ("FROM", TGI_IMAGE)
    staged = sorted(p.name for p in (context / "weights").iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= set(staged)
    assert all((context / "weights" / name).stat().st_mode & 0o004 for name in staged)  # readable by any user
    manifest = json.loads((context / "build.json").read_text())
    assert manifest["image"] == "ghcr.io/kaito-py/kaito-falcon-7b:0.1.0"
    assert manifest["weights_path"] == WEIGHTS_PATH
    assert manifest["revision"] == get("falcon-7b").revision
    assert manifest["files"]["model.safetensors"] == (tiny_model_dir / "model.safetensors").stat().st_size

    staged_runtime = context / "runtime" / "model_images" / "runtime"
    assert (staged_runtime / "serve.py").is_file() and not (staged_runtime / "__pycache__").exists()
    # The container command, `python -m model_images.runtime serve`, runs from the staged sources
    # alone (-S: no site-packages, so not this checkout's installed kaito-py).
    help_run = subprocess.run(
        [sys.executable, "-S", "-m", "model_images.runtime", "serve", "--help"],
        cwd=context / "runtime",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert help_run.returncode == 0, help_run.stderr

    # What goes into the image is a model the runtime can load.
    from model_images.runtime.loader import load_model

    assert load_model(context / "weights", device="cpu").model.config.model_type == "llama"


@pytest.mark.runtime
def test_build_without_docker_prints_the_command(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-docker-here"))
    context = tmp_path / "ctx"
    code = kaito(
        "images", "build", "falcon-7b-instruct", "--weights-dir", str(tiny_model_dir),
        "--output", str(context), "--registry", "myregistry.azurecr.io", "--skip-size-check",
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert (
        "docker buildx build --platform linux/amd64 --tag myregistry.azurecr.io/kaito-falcon-7b-instruct:0.1.0 "
        f"--load {context}"
    ) in out
    assert (context / "Dockerfile").is_file()


@pytest.mark.runtime
def test_weights_of_the_wrong_size_are_refused_by_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    plan = plan_build("falcon-7b", weights_dir=tiny_model_dir, output=tmp_path / "context")
    with pytest.raises(WeightsError, match=r"needs about 13\.4 GiB.*--skip-size-check"):
        write_build_context(plan, tiny_model_dir)
    assert not (tmp_path / "context").exists()


def _remove(name: str) -> Callable[[Path], None]:
    return lambda weights: (weights / name).unlink()


def _truncate(name: str, keep: float) -> Callable[[Path], None]:
    def cut(weights: Path) -> None:
        path = weights / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return cut


def _corrupt_config(weights: Path) -> None:
    (weights / "config.json").write_text("{not json")


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (_remove("model.safetensors"), "no *.safetensors files: TGI loads weights only from safetensors"),
        (_truncate("model.safetensors", 0), "model.safetensors is empty (0 bytes)"),
        (_truncate("model.safetensors", 0.5), "model.safetensors is truncated"),
        (_truncate("model.safetensors", 0.00001), "model.safetensors is not a safetensors file"),
        (_remove("config.json"), "config.json is missing"),
        (_corrupt_config, "config.json is not valid JSON"),
        (_remove("tokenizer.json"), "no tokenizer"),
    ],
)
def test_broken_weights_are_refused_naming_the_problem(
    tiny_model_dir: Path,
    tmp_path: Path,
    damage: Callable[[Path], None],
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model_dir, weights)
    check_weights(weights)  # intact before the damage
    damage(weights)

    with pytest.raises(WeightsError) as caught:
        check_weights(weights)
    assert any(line.startswith(problem) for line in caught.value.problems), caught.value.problems

    code = kaito("images", "build", "falcon-7b", "--weights-dir", str(weights), "--output", str(tmp_path / "ctx"))
    assert code == 2
    assert problem in capsys.readouterr().err


@pytest.mark.runtime
def test_missing_shard_of_a_sharded_checkpoint_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model_dir, weights)
    index = {"metadata": {}, "weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (weights / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(
        WeightsError, match=r"model-00002-of-00002\.safetensors is listed in model\.safetensors\.index\.json"
    ):
        check_weights(weights)


def test_the_images_workflow_builds_the_matrix_the_catalogue_prints() -> None:
    import yaml

    workflow = yaml.safe_load((Path(__file__).parents[2] / ".github/workflows/images.yml").read_text())
    jobs = workflow["jobs"]
    matrix_steps = " ".join(step.get("run", "") for step in jobs["matrix"]["steps"])
    assert "kaito images matrix" in matrix_steps
    assert jobs["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    build_run = " ".join(step.get("run", "") for step in jobs["build"]["steps"])
    assert 'kaito images build "${{ matrix.preset }}"' in build_run
    assert '--revision "${{ matrix.revision }}"' in build_run and "--push" in build_run
