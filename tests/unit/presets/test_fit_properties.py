"""Properties of the fit check over generated presets, SKUs and node counts.

The rule, as Kaito states it: a preset needs at least so many GPUs, so much memory on each GPU and
so much GPU memory in all; every replica is served by one node (TGI shards over the GPUs of one
machine), so a node must meet all three on its own. The properties below follow from that rule and
from Kaito's messages (an offer and a requirement, in that order); the numbers they compare with
are read from the preset and SKU records, never from the code under test.
"""

from __future__ import annotations

import re
import string
from dataclasses import replace

from hypothesis import assume, given
from hypothesis import strategies as st

from kaito_operator.presets.catalog import PRESETS, Preset
from kaito_operator.presets.fit import FitProblem, check_fit, check_sku_fit
from kaito_operator.vm_sizes import SKUS, GpuSku, lookup

# The first words of Kaito's four messages, and what each one is about.
KINDS = {
    "Insufficient number of GPUs": "GPUs per node",
    "Insufficient GPU memory:": "memory per GPU",
    "Insufficient total GPU memory": "total memory",
    "Insufficient GPU memory per node": "memory per node",
}
# Both memory-in-all messages report the same unmet need: the model does not fit in one node's memory.
NODE_MEMORY = {"total memory", "memory per node"}


@st.composite
def presets(draw: st.DrawFn) -> Preset:
    """A catalogue preset with generated requirements (Kaito's range: 1 to 8 GPUs)."""
    preset = draw(st.sampled_from(list(PRESETS.values())))
    return replace(
        preset,
        min_gpu_count=draw(st.integers(1, 8)),
        min_gpu_memory_per_gpu_gib=draw(st.integers(0, 96)),
        min_total_gpu_memory_gib=draw(st.integers(0, 800)),
    )


generated_skus = st.builds(
    GpuSku,
    name=st.just("Standard_NX_generated"),
    gpu_count=st.integers(1, 8),
    gpu_memory_gib=st.integers(1, 96),
    gpu_model=st.just("generated"),
)
table_skus = st.sampled_from(list(SKUS.values()))
skus = st.one_of(table_skus, generated_skus)
counts = st.integers(1, 10)


def read(problem: FitProblem, preset: Preset, instance_type: str) -> tuple[str, int, int]:
    """(what the problem is about, the offer, the requirement) as the message states them."""
    assert problem.field == "resource.instanceType"
    (kind,) = [kind for prefix, kind in KINDS.items() if problem.message.startswith(prefix)]
    assert instance_type in problem.message and preset.name in problem.message
    # Both names may hold digits; what is left are the two figures.
    figures = problem.message.replace(instance_type, "").replace(preset.name, "")
    offer, requirement = (int(n) for n in re.findall(r"\d+", figures))
    return kind, offer, requirement


def kinds(preset: Preset, sku: GpuSku, count: int) -> set[str]:
    return {read(p, preset, sku.name)[0] for p in check_sku_fit(preset, sku, count)}


def unmet(preset: Preset, sku: GpuSku, count: int) -> set[str]:
    """The needs left unmet, with both memory-in-all messages counted as one."""
    return {"node memory" if kind in NODE_MEMORY else kind for kind in kinds(preset, sku, count)}


@given(presets(), skus, counts)
def test_every_message_names_the_binding_constraint_with_the_records_figures(
    preset: Preset, sku: GpuSku, count: int
) -> None:
    node_memory = sku.gpu_count * sku.gpu_memory_gib
    expected = {
        "GPUs per node": (sku.gpu_count, preset.min_gpu_count),
        "memory per GPU": (sku.gpu_memory_gib, preset.min_gpu_memory_per_gpu_gib),
        "total memory": (count * node_memory, preset.min_total_gpu_memory_gib),
        "memory per node": (node_memory, preset.min_total_gpu_memory_gib),
    }
    for problem in check_sku_fit(preset, sku, count):
        kind, offer, requirement = read(problem, preset, sku.name)
        assert (offer, requirement) == expected[kind]
        assert offer < requirement, "the constraint named is one that is not met"


@given(presets(), skus, counts)
def test_every_unmet_need_is_reported(preset: Preset, sku: GpuSku, count: int) -> None:
    reported = kinds(preset, sku, count)
    if sku.gpu_count < preset.min_gpu_count:
        assert "GPUs per node" in reported
    if sku.gpu_memory_gib < preset.min_gpu_memory_per_gpu_gib:
        assert "memory per GPU" in reported
    if sku.gpu_count * sku.gpu_memory_gib < preset.min_total_gpu_memory_gib:
        assert reported & NODE_MEMORY
    assert len(reported) == len(check_sku_fit(preset, sku, count)), "one message per unmet need"


@given(presets(), skus, counts)
def test_a_fit_means_one_node_holds_the_whole_model(preset: Preset, sku: GpuSku, count: int) -> None:
    if not check_sku_fit(preset, sku, count):
        assert sku.gpu_count * sku.gpu_memory_gib >= preset.min_total_gpu_memory_gib
        assert sku.gpu_count >= preset.min_gpu_count
        assert sku.gpu_memory_gib >= preset.min_gpu_memory_per_gpu_gib


@given(presets(), skus, counts, st.integers(1, 64))
def test_more_memory_per_gpu_never_adds_a_problem(preset: Preset, sku: GpuSku, count: int, extra: int) -> None:
    bigger = replace(sku, gpu_memory_gib=sku.gpu_memory_gib + extra)
    assert unmet(preset, bigger, count) <= unmet(preset, sku, count)


@given(presets(), skus, counts, st.integers(1, 8))
def test_more_gpus_per_node_never_add_a_problem(preset: Preset, sku: GpuSku, count: int, extra: int) -> None:
    bigger = replace(sku, gpu_count=sku.gpu_count + extra)
    assert unmet(preset, bigger, count) <= unmet(preset, sku, count)


@given(presets(), skus, counts, st.integers(1, 10))
def test_the_number_of_nodes_never_decides_the_verdict(preset: Preset, sku: GpuSku, count: int, extra: int) -> None:
    # Nodes add up only in the total, and a node that holds the model alone makes any total enough;
    # so more nodes can only turn "total" into "per node", never a misfit into a fit or back.
    fewer, more = kinds(preset, sku, count), kinds(preset, sku, count + extra)
    assert unmet(preset, sku, count) == unmet(preset, sku, count + extra)
    if "memory per node" in fewer:
        assert "memory per node" in more


@given(presets(), table_skus, counts)
def test_check_fit_looks_up_the_table(preset: Preset, sku: GpuSku, count: int) -> None:
    assert check_fit(preset, sku.name, count) == check_sku_fit(preset, sku, count)


@given(presets(), table_skus, counts, st.data())
def test_instance_types_are_matched_whatever_their_case(
    preset: Preset, sku: GpuSku, count: int, data: st.DataObject
) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(sku.name), max_size=len(sku.name)))
    spelled = "".join(ch.swapcase() if flip else ch for ch, flip in zip(sku.name, flips, strict=True))
    as_spelled = [p.message.replace(spelled, sku.name) for p in check_fit(preset, spelled, count)]
    assert as_spelled == [p.message for p in check_fit(preset, sku.name, count)]
    assert all(spelled in p.message for p in check_fit(preset, spelled, count))


size_suffixes = st.text(alphabet=string.ascii_letters + string.digits + "_", min_size=1, max_size=24)


@given(presets(), st.sampled_from(["Standard_N", "Standard_D"]), size_suffixes, counts)
def test_unknown_n_and_d_sizes_skip_the_gpu_checks(preset: Preset, family: str, suffix: str, count: int) -> None:
    instance_type = family + suffix
    assume(lookup(instance_type) is None)
    assert check_fit(preset, instance_type, count) == []


@given(presets(), st.text(alphabet=string.ascii_letters + string.digits + "_", max_size=30), counts)
def test_other_unknown_sizes_are_refused_with_the_supported_list(
    preset: Preset, instance_type: str, count: int
) -> None:
    assume(lookup(instance_type) is None and not instance_type.startswith(("Standard_N", "Standard_D")))
    [problem] = check_fit(preset, instance_type, count)
    assert problem.field == "resource.instanceType"
    assert problem.message.startswith(f"Unsupported instance type {instance_type}. Supported SKUs: ")
    assert all(name in problem.message for name in SKUS)
