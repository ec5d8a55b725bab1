"""Drift: where a live object no longer holds what its controller would write, and the patch back.

A controller renders the fields it owns (its server-side apply intent). ``find_drift(desired,
live)`` compares that intent with the object as the API server serves it, field by field, and
reports only what differs *in the intent*: everything the intent does not mention (server
defaults, status, a label or annotation someone else added, a container a webhook injected) is
not ours and never counts, so it can never cause a write loop.

How values compare:
- maps: every key of the intent must be in the live map with an equal value; extra keys are fine;
- lists of maps that all carry a distinct ``name`` (containers, env, volumes, ports, owner
  references): matched by name, extra live elements are someone else's;
- other lists are atomic (command, args, tolerations, affinity terms): same length, each element
  compared as above, and a difference replaces the whole list;
- scalars: equal; under ``requests``/``limits``/``overhead`` and in ``sizeLimit`` as quantities, so
  "0.5" equals the server's "500m" and "1024Mi" its "1Gi";
  an empty intent (None, {}, [], "", false, 0) equals a field the server omitted.

``restore_patch`` turns the differences into one JSON patch that sets exactly those fields back,
guarded by the live object's resourceVersion (a concurrent change answers 409 Conflict, never a
write over something unseen). A JSON patch, not another apply: apply cannot take back a list
element whose key someone changed (an edited Service port is a new element the editor owns, and
applying ours beside it would be refused as a duplicate port name); a patch at the element's
index can.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal

Segment = str | int

# Where a pod template holds resource.Quantity values, which the API server serves in canonical form
# (emptyDir "1024Mi" comes back as "1Gi"): .../requests/<name>, limits, a RuntimeClass's overhead,
# and an emptyDir's sizeLimit.
_QUANTITY_PARENTS: Final = frozenset({"requests", "limits", "overhead"})
_QUANTITY_FIELDS: Final = frozenset({"sizeLimit"})
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[a-zA-Z]*)$")
_SUFFIXES: Final = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


@dataclass(frozen=True)
class Difference:
    """One place where the live object differs from the intent: ``op`` ``value`` at ``path``."""

    path: tuple[Segment, ...]
    """Where in the live object (list positions are the live ones; "-" appends)."""
    op: Literal["add", "replace"]
    value: Any

    @property
    def pointer(self) -> str:
        """The path as a JSON pointer (RFC 6901)."""
        return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in self.path)


def quantity(value: Any) -> Decimal | None:
    """A Kubernetes resource quantity ("500m", "1Gi", "2e3", 4) as a number; None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number) * (Decimal(10) ** int(suffix[1:]))
        if suffix not in _SUFFIXES:
            return None
        return Decimal(number) * _SUFFIXES[suffix]
    except InvalidOperation:
        return None


def _empty(value: Any) -> bool:
    return value is None or value in ({}, [], "", 0)  # False == 0


def _keyed_by_name(items: list[Any]) -> bool:
    names = [item.get("name") for item in items if isinstance(item, dict)]
    return (
        bool(items)
        and len(names) == len(items)
        and all(isinstance(name, str) for name in names)
        and len(set(names)) == len(names)
    )


def _scalar_equal(desired: Any, live: Any, path: tuple[Segment, ...]) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if (path and path[-1] in _QUANTITY_FIELDS) or (len(path) >= 2 and path[-2] in _QUANTITY_PARENTS):
        wanted, have = quantity(desired), quantity(live)
        return wanted is not None and wanted == have
    # JSON has one number type: 1 and 1.0 are the same value.
    numbers = (int, float)
    return (
        isinstance(desired, numbers)
        and isinstance(live, numbers)
        and not isinstance(desired, bool)
        and not isinstance(live, bool)
        and desired == live
    )


def find_drift(desired: Any, live: Any, path: tuple[Segment, ...] = ()) -> list[Difference]:
    """The differences between the intent ``desired`` and the ``live`` object (rules above)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [Difference(path, "replace", desired)]
        differences: list[Difference] = []
        for key, value in desired.items():
            if live.get(key) is None:
                if not _empty(value):
                    differences.append(Difference((*path, key), "add", value))
                continue
            differences += find_drift(value, live[key], (*path, key))
        return differences
    if isinstance(desired, list):
        if not isinstance(live, list):
            return [Difference(path, "replace", desired)]
        if _keyed_by_name(desired):
            positions = {item.get("name"): i for i, item in enumerate(live) if isinstance(item, dict)}
            differences = []
            for item in desired:
                index = positions.get(item["name"])
                if index is None:
                    differences.append(Difference((*path, "-"), "add", item))
                else:
                    differences += find_drift(item, live[index], (*path, index))
            return differences
        pairs = enumerate(zip(desired, live, strict=False))
        if len(desired) != len(live) or any(find_drift(d, v, (*path, i)) for i, (d, v) in pairs):
            return [Difference(path, "replace", desired)]
        return []
    if _scalar_equal(desired, live, path):
        return []
    if live is None and _empty(desired):
        return []
    return [Difference(path, "replace", desired)]


def restore_patch(differences: list[Difference], resource_version: str) -> list[dict[str, Any]]:
    """A JSON patch that sets every difference back, applied only to ``resource_version``."""
    guard = {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version}
    return [guard, *({"op": d.op, "path": d.pointer, "value": d.value} for d in differences)]
