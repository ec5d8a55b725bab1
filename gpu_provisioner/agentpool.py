"""From a Machine to the agent pool it becomes (pure): the name rule, the instance spec, the tags
that mark a pool as ours, and a fingerprint of what was asked for.

Facts from gpu-provisioner: the pool is named after the Machine; vmSize is the first value of the
instance-type requirement; the OS disk is the storage request (sent in GiB here, upstream's
int32-of-bytes bug is not copied); node labels are the Machine's labels plus
``karpenter.sh/provisioner-name=default`` and ``kaito.sh/machine-type``; taints go as
``key=value:Effect``; the node-image-family annotation picks AzureLinux.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from gpu_provisioner.cloudprovider import InstanceSpec
from gpu_provisioner.errors import InvalidParameters
from gpu_provisioner.quantity import InvalidQuantity, to_gib_rounded_up
from kaito_operator.api import constants as c
from kaito_operator.vm_sizes import is_gpu_size

POOL_NAME_RULE: Final = re.compile(r"^[a-z][a-z0-9]{0,11}$")
"""AKS's rule for Linux agent-pool names; also why names cannot contain '-' (the pool name is
parsed back out of the VMSS name ``aks-<pool>-<digits>-vmss``)."""

LABEL_RAGENGINE: Final = "kaito.sh/ragengine"
KAITO_OWNER_LABELS: Final = (c.LABEL_WORKSPACE, LABEL_RAGENGINE)

# Azure tag names may not contain < > % & \ ? /, so these use '-' rather than Kubernetes-style '/'.
TAG_CLUSTER: Final = "kaito-py-cluster"
TAG_MACHINE: Final = "kaito-py-machine"
TAG_CREATED_AT: Final = "kaito-py-created-at"
TAG_MACHINE_UID: Final = "kaito-py-machine-uid"
"""The UID of the Machine the pool was last PUT for: a pool of ours left by an earlier Machine of the
same name carries another UID, and is PUT again (taking it over) rather than adopted as it is."""


def is_kaito_machine(machine: Mapping[str, Any]) -> bool:
    """gpu-provisioner only provisions Machines made by Kaito's controllers."""
    labels = (machine.get("metadata") or {}).get("labels") or {}
    return any(labels.get(label) for label in KAITO_OWNER_LABELS)


def pool_name_problem(name: str) -> str | None:
    if POOL_NAME_RULE.match(name):
        return None
    return (
        f"machine name {name!r} cannot be an AKS agent pool name: it must match ^[a-z][a-z0-9]{{0,11}}$ "
        "(1-12 characters, a lowercase letter first, then lowercase letters and digits, no '-')"
    )


def _vm_size(spec: Mapping[str, Any]) -> str:
    for requirement in spec.get("requirements") or []:
        if requirement.get("key") == c.LABEL_INSTANCE_TYPE and requirement.get("values"):
            return str(requirement["values"][0])
    raise InvalidParameters("machine spec has no requirement for instance type (node.kubernetes.io/instance-type)")


def _disk_gib(spec: Mapping[str, Any]) -> int:
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage is None:
        return 0  # AKS's default for the VM size
    try:
        return to_gib_rounded_up(storage)
    except InvalidQuantity as error:
        raise InvalidParameters(f"resources.requests.storage: {error}") from error


def _taint(taint: Mapping[str, Any]) -> str:
    return f"{taint.get('key')}={taint.get('value') or ''}:{taint.get('effect')}"


def instance_spec(machine: Mapping[str, Any], *, cluster_name: str, now: datetime) -> InstanceSpec:
    """The agent pool a Machine asks for. Raises ``InvalidParameters`` for a Machine that cannot be
    one (bad name, no instance type, unreadable storage size)."""
    meta = machine.get("metadata") or {}
    spec = machine.get("spec") or {}
    name = str(meta.get("name") or "")
    problem = pool_name_problem(name)
    if problem:
        raise InvalidParameters(problem)
    vm_size = _vm_size(spec)
    family = str((meta.get("annotations") or {}).get(c.ANNOTATION_NODE_IMAGE_FAMILY) or "")
    labels = {
        c.LABEL_PROVISIONER_NAME: c.PROVISIONER_NAME_DEFAULT,
        **{str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        c.LABEL_MACHINE_TYPE: "gpu" if is_gpu_size(vm_size) else "cpu",
    }
    return InstanceSpec(
        name=name,
        vm_size=vm_size,
        os_sku="AzureLinux" if family.lower() == "azurelinux" else "Ubuntu",
        os_disk_size_gb=_disk_gib(spec),
        labels=labels,
        taints=tuple(_taint(t) for t in spec.get("taints") or []),
        tags={
            TAG_CLUSTER: cluster_name,
            TAG_MACHINE: name,
            TAG_MACHINE_UID: str(meta.get("uid") or ""),
            TAG_CREATED_AT: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    )


def fingerprint(spec: InstanceSpec) -> str:
    """A digest of what the pool is asked to be, without the time-stamped tags: equal fingerprints
    mean "the same request", which is how a permanent failure is not retried until the Machine
    changes."""
    content = {
        "name": spec.name,
        "vmSize": spec.vm_size,
        "osSKU": spec.os_sku,
        "osDiskSizeGB": spec.os_disk_size_gb,
        "labels": dict(sorted(spec.labels.items())),
        "taints": list(spec.taints),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def is_ours(tags: Mapping[str, str], cluster_name: str) -> bool:
    """A pool this operator made for this cluster (user-made pools are never touched)."""
    return tags.get(TAG_CLUSTER) == cluster_name and bool(tags.get(TAG_MACHINE))


def belongs_to(tags: Mapping[str, str], *, cluster_name: str, machine_name: str) -> bool:
    """A pool kaito made for this cluster and for a Machine of this name: the only pools a Machine may
    adopt, PUT again or delete. A name match alone is not ownership (the user's ``nodepool1``)."""
    return is_ours(tags, cluster_name) and tags.get(TAG_MACHINE) == machine_name


def made_for_another_machine(tags: Mapping[str, str], machine_uid: str) -> bool:
    """Our pool, but PUT for an earlier Machine of the same name (pools made before the UID tag
    existed carry none and count as this Machine's)."""
    recorded = tags.get(TAG_MACHINE_UID)
    return bool(recorded) and recorded != machine_uid


def created_at(tags: Mapping[str, str]) -> datetime | None:
    value = tags.get(TAG_CREATED_AT)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
