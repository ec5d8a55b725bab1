"""The project's custom resource kinds, addressed through the runtime's generic ``ResourceKind``.

Workspace (kaito.sh/v1alpha1) and Machine (karpenter.sh/v1alpha5) are the contract between the
Workspace controller and the GPU provisioner; the runtime itself knows neither.
"""

from __future__ import annotations

from typing import Final

from kaito_operator.api import constants as c
from kaito_operator.runtime.kinds import ResourceKind

WORKSPACE: Final = ResourceKind(c.KAITO_GROUP, c.KAITO_VERSION, c.WORKSPACE_KIND, c.WORKSPACE_PLURAL, namespaced=True)
MACHINE: Final = ResourceKind(
    c.KARPENTER_GROUP, c.KARPENTER_VERSION, c.MACHINE_KIND, c.MACHINE_PLURAL, namespaced=False
)
