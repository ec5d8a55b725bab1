"""Leader election on a coordination.k8s.io Lease, so several replicas can run and one acts.

The client-go algorithm, on the injected clock:
- a candidate takes the Lease when it does not exist, is released (no holder), or has not been
  renewed for ``lease_duration`` as measured by *our* clock since we last saw its record change
  (never by comparing the holder's timestamps with ours: clocks differ between machines);
- every write carries the resourceVersion it was based on, so two candidates cannot both win;
- the leader renews every ``retry_period``; if it cannot renew for ``renew_deadline``, or it reads
  the Lease held by another identity, it has lost the Lease and must stop acting at once (the
  Manager then cancels its reconciles and stops the process, which restarts clean);
- on a graceful stop the leader releases the Lease, so a standby takes over at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kaito_operator.runtime.client import KubeClient
from kaito_operator.runtime.clock import Clock
from kaito_operator.runtime.errors import ApiError
from kaito_operator.runtime.kinds import LEASE

log = logging.getLogger(__name__)


class LostLeadership(Exception):
    """This process could not renew its Lease in time and must stop acting."""


class LeaderElector:
    def __init__(
        self,
        client: KubeClient,
        clock: Clock,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self.leading = asyncio.Event()

    def _now(self) -> str:
        return self._clock.utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    async def run(self) -> None:
        """Acquire, then renew until cancelled (releases on the way out) or raise LostLeadership."""
        try:
            while not await self._try_acquire_or_renew():
                await self._clock.sleep(self._retry_period)
            log.info("became leader", extra={"lease": f"{self.namespace}/{self.name}", "identity": self.identity})
            self.leading.set()
            last_renewal = self._clock.monotonic()
            while True:
                await self._clock.sleep(self._retry_period)
                remaining = last_renewal + self._renew_deadline - self._clock.monotonic()
                if await self._renew_within(remaining):
                    last_renewal = self._clock.monotonic()
                elif self._observed is not None and self._observed[0] not in ("", self.identity):
                    self.leading.clear()
                    raise LostLeadership(f"lease {self.namespace}/{self.name} is held by {self._observed[0]!r} now")
                elif self._clock.monotonic() - last_renewal >= self._renew_deadline:
                    self.leading.clear()
                    raise LostLeadership(f"could not renew lease {self.namespace}/{self.name}")
        except asyncio.CancelledError:
            if self.leading.is_set():
                await asyncio.shield(self._release())
            raise

    async def _renew_within(self, seconds: float) -> bool:
        """One renewal, given up after ``seconds``: a hung request (the client's timeout is longer
        than the lease) must not keep us acting after another candidate may have taken over."""
        attempt = asyncio.ensure_future(self._try_acquire_or_renew())
        deadline = asyncio.ensure_future(self._clock.sleep(max(0.0, seconds)))
        try:
            await asyncio.wait([attempt, deadline], return_when=asyncio.FIRST_COMPLETED)
        finally:
            attempt.cancel()  # a no-op when it finished
            deadline.cancel()
            await asyncio.gather(attempt, deadline, return_exceptions=True)
        if attempt.cancelled():
            log.warning("renewing lease %s did not finish in %.1fs", self.name, seconds)
            return False
        return attempt.result()

    async def _try_acquire_or_renew(self) -> bool:
        try:
            lease = await self._client.get(LEASE, self.name, self.namespace)
        except ApiError as error:
            if not error.not_found:
                log.warning("reading lease %s failed: %s", self.name, error)
                return False
            return await self._write(None)
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        record = (holder, str(spec.get("renewTime") or ""))
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock.monotonic()
        expired = self._clock.monotonic() - self._observed_at >= float(
            spec.get("leaseDurationSeconds") or self._lease_duration
        )
        if holder and holder != self.identity and not expired:
            return False
        return await self._write(lease)

    async def _write(self, lease: dict[str, Any] | None) -> bool:
        now = self._now()
        spec = dict((lease or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if lease else 0)
        spec.update(holderIdentity=self.identity, leaseDurationSeconds=int(self._lease_duration), renewTime=now)
        body: dict[str, Any] = {
            "apiVersion": LEASE.api_version,
            "kind": LEASE.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if lease is None:
                written = await self._client.create(LEASE, body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                written = await self._client.replace(LEASE, body)
        except ApiError as error:
            if not (error.conflict or error.already_exists):
                log.warning("writing lease %s failed: %s", self.name, error)
            return False
        written_spec = written.get("spec") or {}
        self._observed = (self.identity, str(written_spec.get("renewTime") or ""))
        self._observed_at = self._clock.monotonic()
        return True

    async def _release(self) -> None:
        try:
            lease = await self._client.get(LEASE, self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"]["holderIdentity"] = ""
            lease["spec"]["leaseDurationSeconds"] = 1
            await self._client.replace(LEASE, lease)
            log.info("released the lease", extra={"lease": f"{self.namespace}/{self.name}"})
        except ApiError as error:
            log.warning("releasing lease %s failed: %s", self.name, error)
        finally:
            self.leading.clear()
