"""Which pods the sandbox's pod runner serves and how it reads them: kwok's stage and the runner must
pick the same pods, and the runtime must get the preset container's port, token limits and API key."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from kaito_operator.presets import catalog
from kaito_operator.workspace.workload import RenderOptions, pod_template
from model_images.runtime.command import runtime_container_command
from sandbox.pod_runner import (
    RETRY_MAX_S,
    SERVED_COMMANDS,
    NotServable,
    SecretKey,
    cri_line,
    is_served,
    retry_delay,
    served_container,
)
from tests.unit.workspace.workspace_builders import workspace

SERVED_STAGES = Path(__file__).resolve().parents[3] / "sandbox" / "kwok" / "pods-served.yaml"


def _pod(template: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": template["metadata"], "spec": template["spec"]}


def _selector_values(stage_name: str) -> tuple[str, list[str]]:
    stages = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(SERVED_STAGES.read_text())}
    for expression in stages[stage_name]["spec"]["selector"]["matchExpressions"]:
        if expression["key"] == ".spec.containers.[].command.[0]":
            return expression["operator"], expression["values"]
    raise AssertionError(f"stage {stage_name} does not select on the container command")


def test_kwok_stages_split_pods_on_the_runners_commands() -> None:
    assert _selector_values("pod-start-served") == ("In", list(SERVED_COMMANDS))
    assert _selector_values("pod-ready") == ("NotIn", list(SERVED_COMMANDS))


def test_a_tgi_preset_pod_is_served_with_the_presets_port_and_limits() -> None:
    preset = catalog.get("falcon-7b")
    pod = _pod(pod_template(workspace(preset="falcon-7b"), RenderOptions()))
    assert is_served(pod)
    container = served_container(pod)
    assert container.port == pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert (container.max_input_tokens, container.max_total_tokens) == (
        preset.max_input_tokens,
        preset.max_total_tokens,
    )


def test_a_transformers_runtime_pod_is_served_too() -> None:
    options = RenderOptions(runtime_command=runtime_container_command)
    annotated = workspace(preset="falcon-7b", annotations={"kaito.sh/runtime": "transformers"})
    pod = _pod(pod_template(annotated, options))
    assert is_served(pod)
    assert served_container(pod).max_total_tokens == catalog.get("falcon-7b").max_total_tokens


def test_a_custom_template_pod_is_left_to_kwok() -> None:
    pod = {"metadata": {}, "spec": {"containers": [{"name": "app", "image": "nginx", "command": ["nginx"]}]}}
    assert not is_served(pod)
    assert not is_served({"metadata": {}, "spec": {"containers": [{"name": "app", "image": "nginx"}]}})


def test_log_lines_are_in_the_cri_format() -> None:
    # CRI log line: RFC 3339 time, stream, tag (F = full line), the text.
    line = cri_line("stderr", "loaded", datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC))
    assert line == "2026-01-02T03:04:05.600000Z stderr F loaded\n"


def test_a_protected_workspace_pod_is_served_with_the_key_from_its_secret() -> None:
    annotated = workspace(preset="falcon-7b", annotations={"kaito.sh/api-key-secret": "team-key"})
    pod = _pod(pod_template(annotated, RenderOptions()))
    container = pod["spec"]["containers"][0]
    # The Secret key the pod itself reads its variable from (whatever the workload names it).
    references = [e["valueFrom"]["secretKeyRef"] for e in container.get("env", []) if "valueFrom" in e]
    assert [ref["name"] for ref in references] == ["team-key"]
    assert served_container(pod).api_key == SecretKey("team-key", references[0]["key"])


def test_an_unprotected_pod_is_served_without_a_key() -> None:
    pod = _pod(pod_template(workspace(preset="falcon-7b"), RenderOptions()))
    assert served_container(pod).api_key is None


def _runtime_pod(command_tail: list[str], env: list[dict[str, Any]]) -> dict[str, Any]:
    container = {"name": "m", "image": "i", "command": [SERVED_COMMANDS[1], *command_tail], "env": env}
    return {"metadata": {}, "spec": {"containers": [container]}}


def test_an_api_key_given_literally_or_by_a_plain_variable_is_used_as_it_is() -> None:
    assert served_container(_runtime_pod(["--api-key", "s3cret"], [])).api_key == "s3cret"
    plain = _runtime_pod(["--api-key=$(KEY)"], [{"name": "KEY", "value": "v"}])
    assert served_container(plain).api_key == "v"


def test_an_api_key_the_runner_cannot_follow_makes_the_pod_unservable() -> None:
    with pytest.raises(NotServable) as missing:
        served_container(_runtime_pod(["--api-key", "$(KEY)"], []))
    assert "KEY" in str(missing.value)
    config_map = [{"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]
    with pytest.raises(NotServable):
        served_container(_runtime_pod(["--api-key", "$(KEY)"], config_map))


def test_retries_back_off_and_the_wait_is_bounded() -> None:
    delays = [retry_delay(failures) for failures in range(1, 30)]
    assert all(delay > 0 for delay in delays)
    assert delays == sorted(delays) and delays[0] < delays[-1]
    assert max(delays) == RETRY_MAX_S
