"""Fuzzing admission and the reconciler together: generated Workspaces against a real API server with the
webhook and the operator running. A test helper (it needs ``hypothesis``, a dev dependency); the bounded
run is tests/e2e/test_e2e_admission_fuzz.py, the full one benchmarks/admission_fuzz.py.

Each generated Workspace (valid or not, within the CRD schema or outside it) must either be refused
with a message that names a field, or reach a terminal state before the deadline: WorkspaceReady True,
or a condition False with a reason. ``FuzzReport`` holds the outcomes; the invariants about Machines
and reconcile counts are checked by the callers with ``machines_that_cannot_fit``.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from kaito_operator.api import constants as c
from kaito_operator.api.kinds import MACHINE, WORKSPACE
from kaito_operator.api.workspace import PRESET_NAMES
from kaito_operator.presets import catalog
from kaito_operator.runtime import ApiError, KubeClient
from kaito_operator.vm_sizes import lookup
from sandbox.aks_simulator.sizes import canonical_size, shape

FIELDS: Final = ("metadata.name", "resource", "inference", "spec.", ".template")
"""A refusal must name one of these (the webhook's ``field: why``, the schema's ``resource.count: …``)."""

_SIZES: Final = [
    "Standard_NC12s_v3",
    "Standard_NC6s_v3",
    "Standard_NC24ads_A100_v4",
    "Standard_NC96ads_A100_v4",
    "Standard_NV12",
    "Standard_D4s_v3",
    "Standard_E8s_v5",
    "Standard_NC999_v9",
    "standard_nc12s_v3",
    "",
]
_FITTING: Final = ["Standard_NC12s_v3", "Standard_NC6s_v3", "Standard_NC24ads_A100_v4"]
"""Sizes falcon-7b fits on (and the simulator provisions)."""
_TEMPLATES: Final[list[Any]] = [
    {"spec": {"containers": [{"name": "app", "image": "nginx"}]}},
    {"spec": {"containers": [{"name": "app"}]}},
    {"spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 99999}]}]}},
    {"spec": {}},
    {"metadata": {"labels": {"bad label": "x"}}, "spec": {"containers": [{"name": "a", "image": "nginx"}]}},
]
_EXPRESSIONS: Final[list[dict[str, Any]]] = [
    {"key": "zone", "operator": "In", "values": ["a"]},
    {"key": "zone", "operator": "In", "values": ["a", "b"]},
    {"key": "zone", "operator": "Exists"},
    {"key": "zone", "operator": "NotIn", "values": ["a"]},
    {"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]},
    {"key": "zone", "operator": "Gt", "values": ["1"]},
]


def _often(draw: st.DrawFn, tenths: int) -> bool:
    """True ``tenths``/10 of the time: most examples stay close to a valid Workspace, so both refusals
    and accepted Workspaces (with Machines and nodes) are exercised."""
    return draw(st.integers(0, 9)) < tenths


@st.composite
def workspaces(draw: st.DrawFn) -> dict[str, Any]:
    """A Workspace body without namespace and unique parts (``place`` adds them)."""
    if _often(draw, 8):
        name = draw(st.from_regex(r"[a-z][a-z0-9-]{0,12}[a-z0-9]", fullmatch=True))
    else:
        name = draw(st.sampled_from(["dots.in.name", "Upper", "9lives", "x" * 70, "under_score"]))
    resource: dict[str, Any] = {}
    if not _often(draw, 7):
        resource["count"] = draw(st.one_of(st.integers(-1, 20), st.just(10000), st.just("2")))
    elif _often(draw, 5):
        resource["count"] = draw(st.integers(1, 2))
    resource["instanceType"] = draw(st.sampled_from(_FITTING if _often(draw, 7) else _SIZES))
    if _often(draw, 9):
        selector: dict[str, Any] = {"matchLabels": {}}
        if _often(draw, 2):
            selector["matchExpressions"] = draw(st.lists(st.sampled_from(_EXPRESSIONS), min_size=1, max_size=2))
        if _often(draw, 1):
            selector["matchLabels"]["kubernetes.io/os"] = "windows"
        resource["labelSelector"] = selector
    if _often(draw, 1):
        resource["unknownField"] = "pruned"
    inference: dict[str, Any] = {}
    kind = draw(st.sampled_from(["preset"] * 6 + ["template"] * 2 + ["both", "neither"]))
    if kind in ("preset", "both"):
        names = ["falcon-7b", "falcon-7b-instruct"] if _often(draw, 6) else [*PRESET_NAMES, "Falcon-7B", "gpt-9", ""]
        preset: dict[str, Any] = {"name": draw(st.sampled_from(names))}
        if _often(draw, 3):
            preset["accessMode"] = draw(st.sampled_from(["public", "private", "", "secret"]))
        if _often(draw, 3):
            image = "example.azurecr.io/llama:1"
            preset["presetOptions"] = draw(
                st.sampled_from([{}, {"image": image}, {"image": ""}, {"imagePullSecrets": []}])
            )
        inference["preset"] = preset
    if kind in ("template", "both"):
        inference["template"] = draw(st.sampled_from(_TEMPLATES))
    return {
        "apiVersion": f"{c.KAITO_GROUP}/{c.KAITO_VERSION}",
        "kind": c.WORKSPACE_KIND,
        "metadata": {"name": name},
        "resource": resource,
        "inference": inference,
    }


def generate(count: int, seed_value: int) -> list[dict[str, Any]]:
    """``count`` Workspaces drawn by hypothesis (generation only: no shrinking, no database)."""
    drawn: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @seed(seed_value)
    @given(workspaces())
    def collect(workspace: dict[str, Any]) -> None:
        drawn.append(workspace)

    collect()
    return drawn[:count]


def place(workspace: dict[str, Any], index: int, namespace: str) -> dict[str, Any]:
    """Make the body unique: a name suffix, and a label only this Workspace's nodes carry."""
    workspace = copy.deepcopy(workspace)  # sampled values are shared between examples
    workspace["metadata"] = {"name": f"{workspace['metadata']['name']}-{index}", "namespace": namespace}
    selector = workspace["resource"].get("labelSelector")
    if selector is not None:
        selector["matchLabels"]["fuzz"] = f"f{index}"
    return workspace


@dataclass
class FuzzReport:
    outcomes: Counter[str] = field(default_factory=Counter)
    refusals_without_field: list[str] = field(default_factory=list)
    not_terminal: list[str] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


TRANSIENT_MESSAGE_PREFIXES: Final = ("creating machines: ", "applying service: ", "applying workload: ")
"""How the Workspace controller words a write to the API server that failed (controller.py): a
transient failure (a 409, a timeout) is retried and is no outcome. A refusal (403) reads the same;
the fuzz runs no policy that refuses, so one is unexpected and rightly left "not terminal"."""


def terminal(obj: dict[str, Any]) -> str | None:
    """ "ready", "failed:<Type>:<reason>" for a permanent failure (the spec refused, the workload
    rejected, a Machine that failed), or None while the Workspace is on its way or retrying."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    if any(x["type"] == c.COND_WORKSPACE_READY and x["status"] == "True" for x in conditions):
        return "ready"
    failed = [
        x
        for x in conditions
        if x["status"] == "False"
        and x.get("reason")
        and not str(x.get("message") or "").startswith(TRANSIENT_MESSAGE_PREFIXES)
    ]
    return f"failed:{failed[0]['type']}:{failed[0]['reason']}" if failed else None


async def run(kube: KubeClient, namespace: str, bodies: list[dict[str, Any]], *, deadline_s: float) -> FuzzReport:
    """Create every body (a few at a time), then wait until each accepted one is terminal."""
    report = FuzzReport()
    started = time.monotonic()
    limit = asyncio.Semaphore(8)

    async def create(body: dict[str, Any]) -> None:
        async with limit:
            try:
                report.accepted.append(await kube.create(WORKSPACE, body))
            except ApiError as error:
                if error.status not in (400, 422):
                    raise
                report.outcomes["refused"] += 1
                if not any(name in error.api_message for name in FIELDS):
                    report.refusals_without_field.append(error.api_message)

    await asyncio.gather(*(create(body) for body in bodies))
    pending = {obj["metadata"]["name"] for obj in report.accepted}
    finished: dict[str, str] = {}
    while pending and time.monotonic() - started < deadline_s:
        items, _ = await kube.list(WORKSPACE, namespace)
        for obj in items:
            name = obj["metadata"]["name"]
            state = terminal(obj)
            if name in pending and state is not None:
                finished[name] = state
                pending.discard(name)
        if pending:
            await asyncio.sleep(0.5)  # polling the outcome of many objects, bounded by the deadline
    for state in finished.values():
        report.outcomes[state.split(":")[0] if state == "ready" else state] += 1
    report.not_terminal = sorted(pending)
    report.outcomes["not terminal"] += len(pending)
    report.seconds = time.monotonic() - started
    return report


async def machines_that_cannot_fit(kube: KubeClient, namespace: str, report: FuzzReport) -> list[str]:
    """Machines made for a preset Workspace whose node cannot hold the preset: fewer GPUs than it
    needs, by the simulator's own size table (an independent source from the operator's), or too
    little GPU memory per GPU or in total per node (every replica is served by one node). A size
    neither table knows (an N-series size newer than both) is Azure's to refuse, as Kaito v0.1 let it
    through: its Machine fails at the provisioner, which the Workspace reports, and it is not counted
    here."""
    machines, _ = await kube.list(MACHINE, label_selector=f"{c.LABEL_WORKSPACE_NAMESPACE}={namespace}")
    by_name = {obj["metadata"]["name"]: obj for obj in report.accepted}
    wrong = []
    for machine in machines:
        owner = by_name.get(machine["metadata"]["labels"].get(c.LABEL_WORKSPACE, ""))
        preset = ((owner or {}).get("inference") or {}).get("preset")
        if owner is None or preset is None:
            continue
        if canonical_size(owner["resource"]["instanceType"], None) is None:
            continue
        instance_type = owner["resource"]["instanceType"]
        gpus = shape(instance_type).gpus
        try:
            needs = catalog.get(preset["name"])
        except KeyError:
            wrong.append(f"{machine['metadata']['name']} for {owner['metadata']['name']} (unknown preset)")
            continue
        made_for = f"{machine['metadata']['name']} for {owner['metadata']['name']}"
        if gpus < needs.min_gpu_count:
            wrong.append(made_for)
            continue
        # The memory of one GPU is not in the simulator's table (Azure's size API does not give it
        # either), so it comes from the operator's table: no independent source exists for it. The
        # GPU count it is multiplied by is the simulator's.
        sku = lookup(instance_type)
        if sku is None:
            continue
        if sku.gpu_memory_gib < needs.min_gpu_memory_per_gpu_gib:
            wrong.append(f"{made_for} (memory per GPU)")
        elif gpus * sku.gpu_memory_gib < needs.min_total_gpu_memory_gib:
            wrong.append(f"{made_for} (total GPU memory)")
    return wrong
