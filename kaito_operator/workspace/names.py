"""Deterministic names of the objects a Workspace makes.

Machine names derive from the Workspace's UID and an index, never from the clock, so a restarted
operator (or a lost status write) finds the Machines it already made instead of making more. The
same name becomes the AKS agent pool's name, which must match ``^[a-z][a-z0-9]{0,11}$``: "ws" plus
9 hex digits is 11 characters of lowercase letters and digits.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

AGENT_POOL_NAME: Final = re.compile(r"^[a-z][a-z0-9]{0,11}$")
MACHINE_NAME_PREFIX: Final = "ws"
FIELD_MANAGER: Final = "kaito-workspace-controller"
"""Server-side apply field manager of everything this controller writes."""


def machine_name(workspace_uid: str, index: int) -> str:
    """The name of the workspace's ``index``-th Machine (and of its agent pool)."""
    digest = hashlib.sha256(f"{workspace_uid}/{index}".encode()).hexdigest()
    return MACHINE_NAME_PREFIX + digest[:9]


def machine_names(workspace_uid: str, count: int, *, taken: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """``count`` Machine names for the workspace, the lowest indices whose names are not ``taken``."""
    names: list[str] = []
    index = 0
    while len(names) < count:
        name = machine_name(workspace_uid, index)
        if name not in taken:
            names.append(name)
        index += 1
    return names


def workload_name(workspace_name: str) -> str:
    return workspace_name


def service_name(workspace_name: str) -> str:
    return workspace_name
