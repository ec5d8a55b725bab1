"""Label selectors (matchLabels + matchExpressions): matching labels, and the same selector as
node-affinity requirements, so node selection and pod placement agree on what a node must carry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kaito_operator.api.common import LabelSelector


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """Kubernetes semantics: every matchLabels pair and every expression must hold."""
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        values = expression.values or []
        present = expression.key in labels
        if expression.operator == "In" and not (present and labels[expression.key] in values):
            return False
        if expression.operator == "NotIn" and present and labels[expression.key] in values:
            return False
        if expression.operator == "Exists" and not present:
            return False
        if expression.operator == "DoesNotExist" and present:
            return False
    return True


def node_requirements(selector: LabelSelector) -> list[dict[str, Any]]:
    """The selector as NodeSelectorRequirements (matchLabels k=v becomes ``k In [v]``), in a fixed order."""
    requirements: list[dict[str, Any]] = [
        {"key": key, "operator": "In", "values": [value]}
        for key, value in sorted((selector.match_labels or {}).items())
    ]
    for expression in selector.match_expressions or []:
        requirement: dict[str, Any] = {"key": expression.key, "operator": expression.operator}
        if expression.operator in ("In", "NotIn"):
            requirement["values"] = list(expression.values or [])
        requirements.append(requirement)
    return requirements


def implied_labels(selector: LabelSelector) -> dict[str, str]:
    """Labels a new node must carry to match: matchLabels plus single-valued ``In`` expressions."""
    labels = dict(selector.match_labels or {})
    for expression in selector.match_expressions or []:
        if expression.operator == "In" and len(expression.values or []) == 1:
            labels.setdefault(expression.key, (expression.values or [""])[0])
    return labels
