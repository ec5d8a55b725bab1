"""Our label-selector evaluation (which existing nodes a Workspace may use) agrees with the API
server's, the reference implementation of the semantics, on every selector of a small universe.

ConfigMaps in the test's namespace carry the label sets (selector semantics are the same for every
kind, and a namespace keeps the run apart from other tests); the API server evaluates each
selector in its string form, which this test writes independently of the code under test.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from kaito_operator.api.common import LabelSelector
from kaito_operator.runtime import ResourceKind
from kaito_operator.testing import plain_client
from kaito_operator.workspace.selectors import selector_matches

pytestmark = [pytest.mark.controlplane]

CONFIGMAP = ResourceKind("", "v1", "ConfigMap", "configmaps", namespaced=True)
KEYS = ("tier", "example.com/spot")
VALUES = ("gold", "bronze")


def requirements() -> list[tuple[dict[str, Any], str]]:
    """Each single requirement over KEYS and VALUES, as (matchExpressions item or matchLabels
    pair, the API server's string syntax for it)."""
    found: list[tuple[dict[str, Any], str]] = []
    for key in KEYS:
        for value in VALUES:
            found.append(({"matchLabels": {key: value}}, f"{key}={value}"))
        for values in ([VALUES[0]], [VALUES[1]], list(VALUES)):
            found.append(({"key": key, "operator": "In", "values": values}, f"{key} in ({','.join(values)})"))
            found.append(({"key": key, "operator": "NotIn", "values": values}, f"{key} notin ({','.join(values)})"))
        found.append(({"key": key, "operator": "Exists"}, key))
        found.append(({"key": key, "operator": "DoesNotExist"}, f"!{key}"))
    return found


def selector(parts: tuple[tuple[dict[str, Any], str], ...]) -> tuple[LabelSelector, str]:
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for part, _ in parts:
        if "matchLabels" in part:
            match_labels.update(part["matchLabels"])
        else:
            expressions.append(part)
    body = {"matchLabels": match_labels, "matchExpressions": expressions}
    return LabelSelector.model_validate(body), ",".join(text for _, text in parts)


async def test_selector_evaluation_agrees_with_the_api_server(kube_api: Any, namespace: str) -> None:
    client = plain_client(kube_api)
    # Every label set over KEYS: each key absent, or set to one of VALUES.
    label_sets: dict[str, dict[str, str]] = {}
    for number, choice in enumerate(itertools.product((None, *VALUES), repeat=len(KEYS))):
        labels = {key: value for key, value in zip(KEYS, choice, strict=True) if value is not None}
        name = f"labels-{number}"
        label_sets[name] = labels
        metadata = {"name": name, "namespace": namespace, "labels": labels}
        await client.create(CONFIGMAP, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})

    singles = [(part,) for part in requirements()]
    # Two matchLabels entries for one key cannot share a selector's map; every other pair can.
    pairs = [
        (a, b)
        for a, b in itertools.combinations(requirements(), 2)
        if not (
            "matchLabels" in a[0] and "matchLabels" in b[0] and a[0]["matchLabels"].keys() == b[0]["matchLabels"].keys()
        )
    ]
    sizes = set()
    for parts in singles + pairs:
        ours, text = selector(parts)
        items, _ = await client.list(CONFIGMAP, namespace, label_selector=text)
        theirs = {item["metadata"]["name"] for item in items} & set(label_sets)
        mine = {name for name, labels in label_sets.items() if selector_matches(ours, labels)}
        assert mine == theirs, f"selector {text!r}"
        sizes.add(len(theirs))
    assert 0 in sizes and len(sizes) > 3, "the universe tells selectors apart, down to matching nothing"
