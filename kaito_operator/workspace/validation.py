"""What a Workspace may say: the admission rules, as pure functions over the object as the API server has it.

The validating webhook (kaito_operator.webhook) answers ``kubectl apply`` with these rules, and the
Workspace reconciler applies the same ones, so a Workspace admitted while the webhook was down ends
with a False condition carrying the same message, never a retry loop or a billed node that cannot
serve. Both read plain dicts (the webhook may see objects the pydantic model cannot read).

Kaito v0.1's webhook rules keep its messages word for word (kaito-compat.md §4); the rules it did
not have name the field, the value and what is allowed. The CRD keeps structure only; immutability
lives here, on normalised values, so an update that changes nothing meaningful (``presetOptions: {}``
or ``accessMode: ""`` added by a client that writes empty structs, a full PUT that only adds a
finalizer) is never refused.

A template's pod spec is checked by a server-side dry run (``dry_run_workload`` in the webhook and
the reconciler); that needs the API server, so it is not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from kaito_operator.api import constants as c
from kaito_operator.api.workspace import DEFAULT_INSTANCE_TYPE, PRESET_NAMES, Workspace
from kaito_operator.presets import catalog
from kaito_operator.presets.fit import check_fit, unsupported_instance_type
from kaito_operator.vm_sizes import SKUS, lookup

DEFAULT_MAX_COUNT: Final = 10

# Kaito v0.1's messages (kaito-compat.md §4), verbatim.
MISSING_PRESET_OR_TEMPLATE: Final = "Preset or Template must be specified"
PRESET_AND_TEMPLATE: Final = "Preset and Template cannot be set at the same time"
PRIVATE_NEEDS_IMAGE: Final = "When AccessMode is private, an image must be provided in PresetOptions"
ONLY_MATCH_LABELS_OR_IN: Final = "Only allow matchLabels or 'IN' matchExpression"
IMMUTABLE: Final = "field is immutable"
TEMPLATE_SET_UNSET: Final = "field cannot be unset/set if it was set/unset"

_DNS_1035_LABEL: Final = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_1123_SUBDOMAIN: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MAX_NAME: Final = 63


@dataclass(frozen=True)
class FieldError:
    """One reason a Workspace is refused: the field (JSON path from the object's root) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class Limits:
    """Settings the rules depend on (injected from the operator's settings)."""

    max_count: int = DEFAULT_MAX_COUNT
    """The most nodes one Workspace may ask for (KAITO_MAX_WORKSPACE_COUNT)."""


def describe(errors: list[FieldError]) -> str:
    """All errors in one message, as the webhook answers and the condition reads."""
    return "; ".join(str(error) for error in errors)


# --- reading the raw object ------------------------------------------------------------------------
def _section(obj: dict[str, Any], name: str) -> dict[str, Any]:
    value = obj.get(name)
    return value if isinstance(value, dict) else {}


def _preset(obj: dict[str, Any]) -> dict[str, Any] | None:
    preset = _section(obj, "inference").get("preset")
    return preset if isinstance(preset, dict) else None


def _has_template(obj: dict[str, Any]) -> bool:
    return _section(obj, "inference").get("template") is not None


def _count(obj: dict[str, Any]) -> Any:
    return _section(obj, "resource").get("count", 1)


def _instance_type(obj: dict[str, Any]) -> str:
    return str(_section(obj, "resource").get("instanceType") or DEFAULT_INSTANCE_TYPE)


def normalised_selector(selector: Any) -> dict[str, Any]:
    """A label selector compared by meaning: absent, null and empty parts are the same."""
    selector = selector if isinstance(selector, dict) else {}
    expressions = sorted(
        (
            str(e.get("key")),
            str(e.get("operator")),
            tuple(sorted(str(v) for v in e.get("values") or [])),
        )
        for e in (selector.get("matchExpressions") if isinstance(selector.get("matchExpressions"), list) else [])
        if isinstance(e, dict)
    )
    labels = selector.get("matchLabels")
    return {"matchLabels": dict(labels) if isinstance(labels, dict) else {}, "matchExpressions": expressions}


def normalised_preset(preset: dict[str, Any] | None) -> dict[str, Any] | None:
    """A preset compared by meaning: the name's case, accessMode "" (public) and empty options do not count."""
    if preset is None:
        return None
    options = preset.get("presetOptions") if isinstance(preset.get("presetOptions"), dict) else {}
    return {
        "name": str(preset.get("name") or "").lower(),
        "accessMode": preset.get("accessMode") or "public",
        "image": (options or {}).get("image") or None,
        "imagePullSecrets": list((options or {}).get("imagePullSecrets") or []),
    }


def normalised_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything of a Workspace that admission and the reconciler care about, by meaning."""
    resource = _section(obj, "resource")
    return {
        "count": _count(obj),
        "instanceType": _instance_type(obj),
        "labelSelector": normalised_selector(resource.get("labelSelector")),
        "preferredNodes": list(resource.get("preferredNodes") or []),
        "preset": normalised_preset(_preset(obj)),
        "template": _section(obj, "inference").get("template"),
    }


# --- the rules -------------------------------------------------------------------------------------
def check_name(obj: dict[str, Any]) -> list[FieldError]:
    name = str(_section(obj, "metadata").get("name") or "")
    if len(name) <= _MAX_NAME and _DNS_1035_LABEL.match(name):
        return []
    return [
        FieldError(
            "metadata.name",
            f"{name!r} is not allowed: a Workspace name becomes a Service name and a label value, so it must be "
            f"a DNS-1035 label of at most {_MAX_NAME} characters (lower-case letters, digits and '-', starting "
            "with a letter and ending with a letter or digit)",
        )
    ]


def check_count(obj: dict[str, Any], limits: Limits) -> list[FieldError]:
    count = _count(obj)
    if isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= limits.max_count:
        return []
    return [
        FieldError(
            "resource.count",
            f"{count!r} is not allowed: count must be between 1 and {limits.max_count} (the operator's "
            "KAITO_MAX_WORKSPACE_COUNT)",
        )
    ]


def check_inference(obj: dict[str, Any]) -> list[FieldError]:
    preset = _preset(obj)
    has_template = _has_template(obj)
    if preset is None and not has_template:
        return [FieldError("inference", MISSING_PRESET_OR_TEMPLATE)]
    if preset is not None and has_template:
        return [FieldError("inference", PRESET_AND_TEMPLATE)]
    if preset is None:
        return []
    name = str(preset.get("name") or "")
    if name.lower() not in PRESET_NAMES:
        return [
            FieldError(
                "inference.preset.name",
                f"Unsupported preset name {name} (supported: {', '.join(PRESET_NAMES)})",
            )
        ]
    options = preset.get("presetOptions") if isinstance(preset.get("presetOptions"), dict) else {}
    if preset.get("accessMode") == "private" and not (options or {}).get("image"):
        return [FieldError("inference.preset.presetOptions.image", PRIVATE_NEEDS_IMAGE)]
    return []


def check_instance_type(obj: dict[str, Any]) -> list[FieldError]:
    """Kaito's supported-SKU rule and GPU fit; ours: a preset needs a GPU size."""
    instance_type = _instance_type(obj)
    unsupported = unsupported_instance_type(instance_type)
    if unsupported is not None:
        return [FieldError(unsupported.field, unsupported.message)]
    known = lookup(instance_type)
    if known is not None and known.name != instance_type:
        # Azure takes any case, but nodes carry the canonical spelling in node.kubernetes.io/instance-type,
        # which the Workspace's nodes are matched against exactly: a new node would never be chosen.
        return [
            FieldError(
                "resource.instanceType",
                f"{instance_type} must be spelled {known.name}, as the nodes' node.kubernetes.io/instance-type "
                "label is",
            )
        ]
    preset = _preset(obj)
    if preset is None or str(preset.get("name") or "").lower() not in PRESET_NAMES:
        return []
    if lookup(instance_type) is None and not instance_type.startswith("Standard_N"):
        return [
            FieldError(
                "resource.instanceType",
                f"{instance_type} has no GPU, and preset {preset['name']} needs one: use a GPU size "
                f"(one of {', '.join(SKUS)}, or another Standard_N size)",
            )
        ]
    count = _count(obj)
    if not isinstance(count, int) or count < 1:
        return []  # check_count says why
    problems = check_fit(catalog.get(str(preset["name"])), instance_type, count)
    return [FieldError(p.field, p.message) for p in problems]


def _label_problems(field: str, key: str, value: str | None) -> list[FieldError]:
    problems = []
    prefix, _, name = key.rpartition("/")
    if (prefix and (len(prefix) > 253 or not _DNS_1123_SUBDOMAIN.match(prefix))) or not (
        len(name) <= _MAX_NAME and _LABEL_NAME.match(name)
    ):
        problems.append(
            FieldError(
                field,
                f"label key {key!r} is not valid: an optional DNS subdomain prefix and '/', then at most 63 "
                "characters (letters, digits, '-', '_', '.'), starting and ending with a letter or digit",
            )
        )
    if value is not None and value != "" and not (len(value) <= _MAX_NAME and _LABEL_NAME.match(value)):
        problems.append(
            FieldError(
                field,
                f"label value {value!r} of {key} is not valid: at most 63 characters (letters, digits, '-', "
                "'_', '.'), starting and ending with a letter or digit",
            )
        )
    return problems


def provisioned_labels(obj: dict[str, Any]) -> dict[str, str]:
    """Labels a node provisioned for this Workspace carries with values the operator decides."""
    meta = _section(obj, "metadata")
    return {
        c.LABEL_INSTANCE_TYPE: _instance_type(obj),
        c.LABEL_PROVISIONER_NAME: c.PROVISIONER_NAME_DEFAULT,
        c.LABEL_MACHINE_TYPE: "gpu",
        c.LABEL_ARCH: "amd64",
        c.LABEL_OS: "linux",
        c.LABEL_WORKSPACE: str(meta.get("name") or ""),
        c.LABEL_WORKSPACE_NAMESPACE: str(meta.get("namespace") or ""),
    }


def check_label_selector(obj: dict[str, Any]) -> list[FieldError]:
    """Kaito's rule (matchLabels or single-value ``In`` only), and ours: the labels are valid and a node we
    provision would carry them (no contradiction with each other or with the labels the operator sets)."""
    field = "resource.labelSelector"
    selector = _section(obj, "resource").get("labelSelector")
    selector = selector if isinstance(selector, dict) else {}
    wanted: dict[str, str] = {}
    problems: list[FieldError] = []
    match_labels = selector.get("matchLabels")
    for key, value in (match_labels if isinstance(match_labels, dict) else {}).items():
        problems += _label_problems(f"{field}.matchLabels", str(key), str(value))
        wanted[str(key)] = str(value)
    expressions = selector.get("matchExpressions")
    for index, expression in enumerate(expressions if isinstance(expressions, list) else []):
        if not isinstance(expression, dict):
            continue  # the model check names it
        where = f"{field}.matchExpressions[{index}]"
        operator, values = expression.get("operator"), list(expression.get("values") or [])
        if operator != "In" or len(values) != 1:
            detail = f"operator {operator} with {len(values)} values" if operator == "In" else f"operator {operator}"
            problems.append(
                FieldError(
                    where,
                    f"{ONLY_MATCH_LABELS_OR_IN} ({detail} cannot be carried by a new node: use matchLabels, or "
                    "In with exactly one value)",
                )
            )
            continue
        key, value = str(expression.get("key")), str(values[0])
        problems += _label_problems(where, key, value)
        if key in wanted and wanted[key] != value:
            problems.append(
                FieldError(where, f"{key} In [{value}] contradicts {key}={wanted[key]}: no node can carry both")
            )
        wanted.setdefault(key, value)
    for key, value in provisioned_labels(obj).items():
        if key in wanted and wanted[key] != value:
            problems.append(
                FieldError(
                    field,
                    f"{key}={wanted[key]} can never match a node provisioned for this Workspace, which carries "
                    f"{key}={value}: drop it or use {value}",
                )
            )
    return problems


def check_model(obj: dict[str, Any]) -> list[FieldError]:
    """What the schema lets through but the operator cannot read (reported once, by field)."""
    try:
        Workspace.model_validate(obj)
    except ValidationError as error:
        return [
            FieldError(
                ".".join(str(part) for part in item["loc"]) or "(root)", f"{item['msg']} (got {item['input']!r})"
            )
            for item in error.errors()
        ]
    return []


def validate_create(obj: dict[str, Any], limits: Limits) -> list[FieldError]:
    """Every reason this Workspace cannot be served; empty when it can (bar the template dry run)."""
    problems = [
        *check_name(obj),
        *check_count(obj, limits),
        *check_inference(obj),
        *check_instance_type(obj),
        *check_label_selector(obj),
    ]
    return problems or check_model(obj)


def check_immutable(old: dict[str, Any], new: dict[str, Any]) -> list[FieldError]:
    """Kaito's immutable fields, compared by meaning."""
    before, after = normalised_spec(old), normalised_spec(new)
    problems = [
        FieldError(f"resource.{name}", IMMUTABLE)
        for name in ("count", "instanceType", "labelSelector")
        if before[name] != after[name]
    ]
    if (before["template"] is None) != (after["template"] is None):
        problems.append(FieldError("inference.template", TEMPLATE_SET_UNSET))
    if before["preset"] is not None and after["preset"] is not None and before["preset"] != after["preset"]:
        problems.append(FieldError("inference.preset", IMMUTABLE))
    return problems


def spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return normalised_spec(old) != normalised_spec(new)


def validate_update(old: dict[str, Any], new: dict[str, Any], limits: Limits) -> list[FieldError]:
    """An update may always change metadata (finalizers, labels) and always delete; when it changes the
    spec, the immutable fields must stay and the result must pass the create rules."""
    if _section(new, "metadata").get("deletionTimestamp") or not spec_changed(old, new):
        return []
    return check_immutable(old, new) or validate_create(new, limits)
