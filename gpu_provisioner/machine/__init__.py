"""The Machine controller, one module per lifecycle step (karpenter's shape): ``controller`` (fetch,
finalizer, run the steps on a draft, write once), ``launch`` (MachineLaunched), ``registration``
(MachineRegistered), ``initialization`` (MachineInitialized), ``liveness`` (launch and registration
timeouts), ``termination`` (drain, delete the nodes and our pool), with ``draft``, ``operations`` (the
running Azure operation of each Machine) and ``nodes`` (index, drain, delete) beside them."""

from gpu_provisioner.machine.controller import (
    COND_CLOUD_CONFIGURED,
    MachineController,
    machine_filter,
    wakes_the_controller,
)
from gpu_provisioner.machine.launch import ANNOTATION_FAILED_REQUEST, REASON_NOT_OWNED
from gpu_provisioner.machine.nodes import NODE_INDEX, agentpool_of, map_node_to_machine, node_changed
from gpu_provisioner.machine.operations import ANNOTATION_CREATE_ACCEPTED, ANNOTATION_OPERATION

__all__ = [
    "ANNOTATION_CREATE_ACCEPTED",
    "ANNOTATION_FAILED_REQUEST",
    "ANNOTATION_OPERATION",
    "COND_CLOUD_CONFIGURED",
    "NODE_INDEX",
    "REASON_NOT_OWNED",
    "MachineController",
    "agentpool_of",
    "machine_filter",
    "map_node_to_machine",
    "node_changed",
    "wakes_the_controller",
]
