"""Names shared by every controller: API groups, label keys, finalizers, condition types and reasons.

These strings are the Kaito v0.1 / gpu-provisioner contract; other tools match on them, so they are
kept exactly as upstream spells them (including upstream's inconsistent capitalisation of reasons).
"""

from __future__ import annotations

from typing import Final

# --- API groups -------------------------------------------------------------------------------
KAITO_GROUP: Final = "kaito.sh"
KAITO_VERSION: Final = "v1alpha1"
WORKSPACE_KIND: Final = "Workspace"
WORKSPACE_PLURAL: Final = "workspaces"

KARPENTER_GROUP: Final = "karpenter.sh"
KARPENTER_VERSION: Final = "v1alpha5"
MACHINE_KIND: Final = "Machine"
MACHINE_PLURAL: Final = "machines"

# --- Labels and annotations -------------------------------------------------------------------
LABEL_WORKSPACE: Final = "kaito.sh/workspace"
LABEL_WORKSPACE_NAMESPACE: Final = "kaito.sh/workspacenamespace"
LABEL_MACHINE_TYPE: Final = "kaito.sh/machine-type"
LABEL_PROVISIONER_NAME: Final = "karpenter.sh/provisioner-name"
LABEL_INSTANCE_TYPE: Final = "node.kubernetes.io/instance-type"
LABEL_ARCH: Final = "kubernetes.io/arch"
LABEL_OS: Final = "kubernetes.io/os"
LABEL_AKS_AGENTPOOL: Final = "kubernetes.azure.com/agentpool"
LABEL_AGENTPOOL: Final = "agentpool"
LABEL_ZONE: Final = "topology.kubernetes.io/zone"

ANNOTATION_ENABLE_LB: Final = "kaito.sh/enablelb"
ANNOTATION_API_KEY_SECRET: Final = "kaito.sh/api-key-secret"
"""Names a Secret in the Workspace's namespace whose key ``api-key`` protects the endpoint: the
server then answers only requests with ``Authorization: Bearer <that key>`` (health and metrics
stay open for probes and scrapers)."""
API_KEY_SECRET_KEY: Final = "api-key"
ANNOTATION_RUNTIME: Final = "kaito.sh/runtime"
ANNOTATION_NODE_IMAGE_FAMILY: Final = "kaito.sh/node-image-family"
ANNOTATION_SANDBOX_SERVED: Final = "sandbox.kaito.sh/served"
"""Set on a pod by the sandbox's pod runner once it serves the pod for real (kwok runs nothing)."""
ANNOTATION_KWOK_NODE: Final = "kwok.x-k8s.io/node"
"""kwok's annotation on the nodes it plays the kubelet of (value ``fake``)."""

PROVISIONER_NAME_DEFAULT: Final = "default"
GPU_RESOURCE: Final = "nvidia.com/gpu"

# --- Finalizers -------------------------------------------------------------------------------
WORKSPACE_FINALIZER: Final = "workspace.finalizer.kaito.sh"
MACHINE_FINALIZER: Final = "karpenter.sh/termination"

# --- Workspace conditions (kaito v0.1 names and reasons) --------------------------------------
COND_MACHINE_READY: Final = "MachineReady"
COND_RESOURCE_READY: Final = "ResourceReady"
COND_INFERENCE_READY: Final = "InferenceReady"
COND_WORKSPACE_READY: Final = "WorkspaceReady"
COND_WORKSPACE_DELETING: Final = "WorkspaceDeleting"

# --- Machine conditions (karpenter v1alpha5 names) --------------------------------------------
COND_MACHINE_LAUNCHED: Final = "MachineLaunched"
COND_MACHINE_REGISTERED: Final = "MachineRegistered"
COND_MACHINE_INITIALIZED: Final = "MachineInitialized"
COND_READY: Final = "Ready"
