"""Fixtures for the real Azure SDK against the AKS + Entra ID simulator (HTTPS, no Kubernetes)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gpu_provisioner.aks import AksCloudProvider
from gpu_provisioner.settings import AzureSettings
from sandbox.aks_simulator import AksSimulator, SimulatorConfig
from tests.integration.provisioner.provisioner_helpers import FAST


@pytest.fixture
async def simulator() -> AsyncIterator[AksSimulator]:
    async with AksSimulator(SimulatorConfig(provisioning_delay_s=0.3, deletion_delay_s=0.1)) as sim:
        yield sim


@pytest.fixture
def azure_settings(simulator: AksSimulator, tmp_path: Path) -> AzureSettings:
    token_file = simulator.write_federated_token(tmp_path / "federated-token")
    return AzureSettings.model_validate(simulator.operator_environment(token_file))


@pytest.fixture
async def provider(azure_settings: AzureSettings) -> AsyncIterator[AksCloudProvider]:
    async with AksCloudProvider(azure_settings, FAST) as cloud:
        yield cloud
