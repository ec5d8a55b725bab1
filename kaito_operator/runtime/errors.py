"""Failure kinds. The controller loop branches on the *type* of an error, never on its text.

- ``TransientError``: worth retrying (429, 5xx, conflicts, timeouts, lost connections). The work
  queue retries the key with exponential backoff, or after ``retry_after`` when the server said so.
- ``PermanentError``: retrying cannot help until something else changes (invalid spec, quota, a
  preset that does not fit). The reconciler has already reported it (condition + Event); the loop
  logs it and does *not* retry with backoff, so there is no hot loop. A watch event on the object
  (the user fixing it) brings the key back; ``retry_after`` (seconds) asks for one slow look later,
  for causes that can go away without an event on a watched object (RBAC, an admission policy).
- ``ApiError``: an HTTP error from the API server, translated once at the client edge. It is
  neither of the two: ``transient`` says whether its status code is worth retrying, and it carries
  the status ``reason`` ("NotFound", "AlreadyExists", "Conflict", ...) so callers can test
  ``not_found`` etc. The loop retries every ApiError with backoff (a non-transient one counts as
  "unexpected"); a reconciler that knows a refusal is final reports it and raises PermanentError.
  ``refused`` marks the answers that say the request itself is unacceptable (400, 403, 422): the
  same request gets the same answer until someone changes a policy, a quota or the object.
"""

from __future__ import annotations

import json
from typing import Any


class ReconcileError(Exception):
    """Base of the error kinds the controller loop understands."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class TransientError(ReconcileError):
    """Retry with backoff; ``retry_after`` (seconds) overrides the backoff when known."""

    def __init__(self, message: str, *, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class PermanentError(ReconcileError):
    """Do not retry with backoff; already reported to the user on the object.

    ``retry_after`` (seconds): look once more after this long (the loop's backoff is not used),
    for a cause that may change unseen; None: only a watch event brings the key back.
    """

    def __init__(self, message: str, *, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


_TRANSIENT_STATUSES = frozenset({0, 408, 409, 410, 429, 500, 502, 503, 504})
_REFUSED_STATUSES = frozenset({400, 403, 422})


class ApiError(ReconcileError):
    """A non-2xx answer of the API server (status 0: no answer at all, e.g. a timeout)."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        verb: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{verb} {path}: {status} {reason}: {message}".strip(), reason=reason)
        self.status = status
        self.api_message = message
        self.verb = verb
        self.path = path
        self.retry_after = retry_after

    @classmethod
    def from_response(cls, status: int, body: bytes, headers: Any, *, verb: str, path: str) -> ApiError:
        reason, message = "", body.decode("utf-8", "replace")[:2000]
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            reason = str(parsed.get("reason") or "")
            message = str(parsed.get("message") or message)
        retry_after: float | None = None
        raw_retry = headers.get("Retry-After") if headers is not None else None
        if raw_retry is not None:
            try:
                retry_after = float(raw_retry)
            except ValueError:
                retry_after = None
        return cls(status, reason, message, verb=verb, path=path, retry_after=retry_after)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def conflict(self) -> bool:
        return self.status == 409 and self.reason != "AlreadyExists"

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def transient(self) -> bool:
        return self.status in _TRANSIENT_STATUSES

    @property
    def refused(self) -> bool:
        """Bad request, forbidden (RBAC, an admission policy, a quota) or invalid: sending the same
        request again gets the same answer until something else changes."""
        return self.status in _REFUSED_STATUSES


def is_transient(error: BaseException) -> bool:
    """True for errors that a retry with backoff may cure (the default for the unknown)."""
    if isinstance(error, ApiError):
        return error.transient
    return not isinstance(error, PermanentError)
