"""Liveness: a Machine that cannot get going is deleted, so the Workspace controller makes a new one
(karpenter's timeouts, as settings). Pure: it reads the draft and the clock and says "expired, because
..." or when to look again; the controller does the deletion.

- **Launch timeout** (``launch_timeout_s``, 5 min), from the start of the current run of launching
  (when MachineLaunched last became Unknown/Launching: the Machine's creation, or the end of a
  permanent failure, configuration error or user's pool that kept it False): Azure has not accepted
  its create because every attempt failed in a way worth retrying (throttling, server errors, failed
  operations); an hour of waiting on quota followed by one 429 on the re-check starts a new run.
  Not for permanent failures (quota, VM size, capacity: re-checked instead, see launch.py),
  configuration errors (a new Machine would fail the same way) or a user's pool of that name
  (deleting cannot help).
- **Registration timeout** (``registration_timeout_s``, 15 min), from the MachineLaunched=True
  transition: the pool succeeded but its node never registered. Only while the Machine has never
  registered (``status.nodeName`` unset): a Machine whose node was there once and is now missing
  (NodeNotFound), or shares its pool with a surge node during an upgrade (MultipleNodesFound), says
  so in its conditions and is not deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gpu_provisioner.machine.draft import Draft, meta
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.api import constants as c

REASON_LAUNCH_TIMEOUT: Final = "LaunchTimeout"
REASON_REGISTRATION_TIMEOUT: Final = "RegistrationTimeout"


@dataclass(frozen=True)
class Expired:
    reason: str
    message: str


def check(draft: Draft, *, now: datetime, settings: ProvisionerSettings) -> Expired | float | None:
    """``Expired`` when the Machine must go; else seconds until a timeout could fire (None: none runs)."""
    if draft.status_of(c.COND_MACHINE_REGISTERED) == "True":
        return None
    if draft.launched():
        if _ever_registered(draft):
            return None
        launched = draft.condition(c.COND_MACHINE_LAUNCHED)
        since = _time(launched.get("lastTransitionTime")) if launched and launched.get("status") == "True" else None
        left = settings.registration_timeout_s - ((now - since).total_seconds() if since else 0.0)
        if left > 0:
            return left
        return Expired(
            REASON_REGISTRATION_TIMEOUT,
            f"the node of agent pool {draft.name} did not register within {settings.registration_timeout_s:g}s "
            "of the pool's creation; deleting the Machine and its agent pool",
        )
    if draft.launch_outcome != "retrying":
        return None
    since = _launching_since(draft, now)
    left = settings.launch_timeout_s - (now - since).total_seconds()
    if left > 0:
        return left
    message = f"agent pool {draft.name} was not launched within {settings.launch_timeout_s:g}s"
    launched_mark = draft.marks.get(c.COND_MACHINE_LAUNCHED)
    if launched_mark is not None and launched_mark.message:
        message += f" ({launched_mark.message})"
    return Expired(REASON_LAUNCH_TIMEOUT, message + "; deleting the Machine")


def _launching_since(draft: Draft, now: datetime) -> datetime:
    """When MachineLaunched became Unknown (the current run of launching began)."""
    written = draft.condition(c.COND_MACHINE_LAUNCHED)
    if written is None:
        return _time(meta(draft.machine).get("creationTimestamp")) or now
    if written.get("status") not in ("Unknown", None):
        return now  # it leaves True/False in this reconcile: a new run starts now
    return _time(written.get("lastTransitionTime")) or _time(meta(draft.machine).get("creationTimestamp")) or now


def _ever_registered(draft: Draft) -> bool:
    return bool(draft.status.get("nodeName") or (draft.machine.get("status") or {}).get("nodeName"))


def _time(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
