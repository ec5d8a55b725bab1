"""The start-up check of the Azure configuration: list the managed cluster's agent pools once at
start, then periodically. A subscription, resource group or cluster that does not exist, or an
identity without rights, is a :class:`~gpu_provisioner.errors.ConfigurationError`: the check keeps
its message for ``/readyz`` and for the ``CloudProviderConfigured`` condition of every Machine, and
wakes the Machine controller whenever the verdict changes. A transient failure changes nothing.
Entra ID ends each refusal with a fresh Trace ID, Correlation ID and Timestamp; those are dropped
from the message, so the same refusal is the same verdict (no wake-up, no condition rewrite, no new
Event on every check).

It runs as a controller with one fixed key (a singleton; its requeue makes it periodic).
"""

from __future__ import annotations

import logging
from typing import Final

from gpu_provisioner.cloudprovider import CloudProvider
from gpu_provisioner.errors import CloudError, ConfigurationError, without_volatile_parts
from gpu_provisioner.settings import ProvisionerSettings
from kaito_operator.runtime import Controller, Informer, ObjectKey, Result

log = logging.getLogger(__name__)
CHECK_KEY: Final = ObjectKey("", "azure-configuration-check")
_HEALTHY_RECHECK_FACTOR: Final = 10


class ConfigurationCheck:
    def __init__(self, *, cloud: CloudProvider, settings: ProvisionerSettings, cluster: str) -> None:
        self._cloud = cloud
        self._settings = settings
        self._cluster = cluster
        self.problem: str | None = None
        """What is wrong with the configuration, in words a user can act on; None when all is well."""
        self.checked = False
        self._machine_controller: Controller | None = None
        self._machines: Informer | None = None

    def wake_on_change(self, controller: Controller, machines: Informer) -> None:
        """Re-reconcile every Machine of ``machines`` when the verdict changes."""
        self._machine_controller = controller
        self._machines = machines

    def readiness(self) -> str | None:
        """For /readyz: the problem, or None."""
        return self.problem

    async def reconcile(self, key: ObjectKey) -> Result:
        try:
            await self._cloud.list()
        except ConfigurationError as error:
            self._verdict(without_volatile_parts(f"AKS cluster {self._cluster}: {error.reason}: {error}"))
            return Result(self._settings.configuration_recheck_interval_s)
        except CloudError as error:
            log.info("configuration check: Azure did not answer (%s); checking again soon", error)
            return Result(self._settings.configuration_recheck_interval_s)
        self._verdict(None)
        return Result(self._settings.configuration_recheck_interval_s * _HEALTHY_RECHECK_FACTOR)

    def _verdict(self, problem: str | None) -> None:
        # Only a change wakes the Machines: a first "all is well" must not make every Machine look at
        # Azure again before its time.
        changed = problem != self.problem
        self.checked = True
        if problem != self.problem:
            if problem is None:
                log.info("configuration check: Azure answers again; the configuration is fine")
            else:
                log.error("configuration check: %s", problem)
        self.problem = problem
        if changed and self._machine_controller is not None and self._machines is not None:
            for machine_key in self._machines.store.keys():  # noqa: SIM118 (a Store, not a dict)
                self._machine_controller.queue.add(machine_key)
