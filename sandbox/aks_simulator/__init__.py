"""A local AKS agent-pool API and Entra ID token endpoint over HTTPS, for the sandbox and tests.

The real azure-mgmt-containerservice and azure-identity clients talk to it unchanged: agent pools
go through ARM's long-running-operation protocol, succeeded pools register their Node in a real
API server, faults can be injected, and every request is recorded.
"""

from sandbox.aks_simulator.config import Fault, SimulatorConfig
from sandbox.aks_simulator.server import AksSimulator, RecordedRequest

__all__ = ["AksSimulator", "Fault", "RecordedRequest", "SimulatorConfig"]
